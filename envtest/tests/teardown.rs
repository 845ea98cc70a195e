//! No control-plane process outlives the process that started it, however that process ends.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by init) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')).unwrap_or(false))
        .unwrap_or(false)
}

fn run_and_collect(arg: &str) -> (Vec<u32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_envtest-up")).arg(arg).output().expect("run envtest-up");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pids: "))
        .unwrap_or_else(|| {
            panic!("no pids printed; stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
        })
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    let kubeconfig = stdout.lines().find_map(|l| l.strip_prefix("kubeconfig: ")).unwrap_or_default().to_string();
    (pids, kubeconfig)
}

fn assert_all_gone(pids: &[u32], kubeconfig: &str) {
    // etcd, kube-apiserver, kwok and the reaper.
    assert_eq!(pids.len(), 4, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running 15 s after the parent exited: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = Path::new(kubeconfig).parent().expect("kubeconfig in the control plane's directory");
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir.exists() {
        assert!(Instant::now() < deadline, "{} was not removed", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn processes_die_when_the_parent_exits_without_cleanup() {
    let (pids, kubeconfig) = run_and_collect("--exit-when-ready");
    assert_all_gone(&pids, &kubeconfig);
}

#[test]
fn processes_die_when_the_parent_panics() {
    let (pids, kubeconfig) = run_and_collect("--panic-when-ready");
    assert_all_gone(&pids, &kubeconfig);
}

#[tokio::test]
async fn dropping_a_control_plane_stops_it_at_once() {
    let cp = envtest::ControlPlane::start(envtest::Options { kwok: false, ..Default::default() })
        .await
        .expect("control plane starts");
    let pids = cp.pids();
    assert_eq!(pids.len(), 3, "etcd, kube-apiserver, reaper: {pids:?}");
    let dir = cp.kubeconfig_path().parent().map(Path::to_path_buf).expect("dir");
    drop(cp);
    assert!(pids.iter().all(|p| !alive(*p)), "alive after drop: {pids:?}");
    assert!(!dir.exists());
}
