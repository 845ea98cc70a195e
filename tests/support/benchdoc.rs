//! Shared by the reports of `epslice-bench` and `epslice-webhook-bench`: the machine a run was on,
//! and writing a report into a markdown file between two markers.

use std::path::Path;

use anyhow::Context as _;

/// One line about the machine: cores, memory, CPU model, kernel.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok())
        })
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|x| x.1.trim().to_string()))
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_default();
    format!("{cores} CPUs (nproc), {:.1} GiB RAM, {model}, Linux {kernel}", mem_kib as f64 / 1024.0 / 1024.0)
}

/// Replaces the text between `begin` and `end` in the markdown file `path` with `section`. When the
/// markers (or the file) are missing, the block is appended if `append_if_missing`, else it is an
/// error.
pub fn write_section(
    path: &Path,
    begin: &str,
    end: &str,
    section: &str,
    append_if_missing: bool,
) -> anyhow::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if append_if_missing && e.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_string(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let block = format!("{begin}\n{}\n{end}", section.trim_end());
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        (Some(b), Some(e)) if e <= b => anyhow::bail!("{}: {end} comes before {begin}", path.display()),
        _ if append_if_missing => format!("{}\n\n{block}\n", old.trim_end()),
        _ => anyhow::bail!("{} has no {begin} … {end} markers", path.display()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_section_replaces_appends_or_refuses() {
        let dir = std::env::temp_dir().join(format!("epslice-benchdoc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("b.md");
        std::fs::write(&p, "# T\n\nintro\n<!-- a -->\nold\n<!-- z -->\ntail\n").unwrap();
        write_section(&p, "<!-- a -->", "<!-- z -->", "new\n", false).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "# T\n\nintro\n<!-- a -->\nnew\n<!-- z -->\ntail\n");
        let err = write_section(&p, "<!-- b -->", "<!-- y -->", "x", false).unwrap_err();
        assert!(err.to_string().contains("no <!-- b -->"), "{err}");
        write_section(&p, "<!-- b -->", "<!-- y -->", "x", true).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().ends_with("tail\n\n<!-- b -->\nx\n<!-- y -->\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
