//! `epslice-webhook-bench`: the service-env webhook at scale. A control plane of its own, a
//! namespace of `--services` ClusterIP Services, the webhook started in-process as `epslice
//! webhook` starts it; phase A drives `POST /mutate` over HTTPS on loopback, phase B creates pods
//! through kube-apiserver without and with the webhook. See docs/benchmarks.md ("Webhook").

pub mod apiserver;
pub mod cli;
pub mod load;
pub mod report;
pub mod setup;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use cli::{Args, Profile};
use load::{Histogram, Target};
use report::{LoadCell, Report};

fn log(msg: impl AsRef<str>) {
    eprintln!("epslice-webhook-bench: {}", msg.as_ref());
}

/// Runs the benchmark; returns the markdown report. `load_rt` runs the load generator, apart
/// from the runtime serving the webhook.
pub async fn run(args: Args, command: String, load_rt: tokio::runtime::Handle) -> anyhow::Result<String> {
    let machine = epslice_integration_tests::benchdoc::machine();
    let load_before = report::load_avg();
    log("starting etcd + kube-apiserver");
    let opts = envtest::Options { kwok: false, ..Default::default() };
    let mut cp = envtest::ControlPlane::start(opts).await.context("starting the control plane")?;
    let client = cp.client().await?;
    let result = measure(&args, &client, machine, load_before, command, load_rt).await;
    apiserver::unregister(&client).await;
    cp.stop();
    result
}

async fn measure(
    args: &Args,
    client: &kube::Client,
    machine: String,
    load_before: String,
    command: String,
    load_rt: tokio::runtime::Handle,
) -> anyhow::Result<String> {
    setup::install_crd(client).await?;
    log(format!("creating {} Services × {} ports", args.services, args.ports_per_service));
    let (ns, selected, setup_time) = setup::namespace(client, args).await?;
    log(format!("namespace {ns} ready in {setup_time:.1?}; starting the webhook"));
    let pki = setup::pki()?;
    let mut webhook = setup::Webhook::start(client, &pki, args.max_added_bytes).await?;
    let target = Target::new(webhook.port, pki.ca_der.clone())?;
    let t0 = Instant::now();
    loop {
        if webhook.finished() {
            webhook.stop().await?;
            bail!("the webhook exited at start-up");
        }
        match target.get("/readyz").await {
            Ok((200, _)) => break,
            r if t0.elapsed() > Duration::from_secs(60) => bail!("webhook /readyz never 200: {r:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    log(format!("webhook ready on 127.0.0.1:{} after {:.1?}", webhook.port, t0.elapsed()));

    // One checked review per profile: what the answer is (patch or not) and its size.
    let mut templates = Vec::new();
    let mut answers = Vec::new();
    let mut request_bytes = Vec::new();
    for &p in &args.profiles {
        let template = setup::review_template(client, &ns, p).await?;
        let answer = target
            .review_once(&template, "ffffffff-0000-4000-8000-000000000000")
            .await
            .with_context(|| format!("probe review, profile {}", p.name()))?;
        if p == Profile::Selected && !answer.patched {
            bail!("profile selected: no patch in the answer (warnings: {:?})", answer.warnings);
        }
        log(format!(
            "profile {}: request {} B, answer {} B, patch {}, warnings {:?}",
            p.name(),
            template.len(),
            answer.body_bytes,
            answer.patched,
            answer.warnings
        ));
        request_bytes.push((p, template.len()));
        templates.push((p, Arc::new(template)));
        answers.push((p, answer));
    }

    let mut phase_a = Vec::new();
    if args.runs("a") {
        for (p, template) in &templates {
            let expect_patch = answers.iter().find(|(q, _)| q == p).is_some_and(|(_, a)| a.patched);
            for &c in &args.concurrency {
                let (warmup, window) = (args.warmup, args.duration);
                let job = load_rt.spawn(load::run(target.clone(), template.clone(), c, warmup, window, expect_patch));
                tokio::time::sleep(warmup).await;
                let h0 = Histogram::parse(&webhook.metrics.encode());
                let load = job.await.context("load generator")??;
                let handler = Histogram::parse(&webhook.metrics.encode()).since(&h0);
                log(format!(
                    "A {} C={c}: {:.0}/s, client p50 {} p99 {}, handler mean {}, errors {}",
                    p.name(),
                    load.throughput(),
                    report::ms(load.quantile(0.5)),
                    report::ms(load.quantile(0.99)),
                    report::ms(handler.mean()),
                    load.error_count()
                ));
                phase_a.push(LoadCell { profile: *p, load, handler });
            }
        }
    }

    let mut phase_b = Vec::new();
    if args.runs("b") {
        apiserver::unregister(client).await;
        for &c in &args.pod_concurrency {
            let s =
                apiserver::series(client, &ns, &webhook, None, c, args.pods, &apiserver::Expect::Untouched, None).await;
            log(format!("B off C={c}: p50 {} p99 {}", report::ms(s.quantile(0.5)), report::ms(s.quantile(0.99))));
            phase_b.push(s);
        }
        apiserver::register(client, &ns, &webhook, &pki.ca_pem).await?;
        let hosts = apiserver::expected_hosts(client, &ns, &selected).await?;
        let injected = apiserver::injected_template(client, &ns).await?;
        for (p, answer) in &answers {
            let expect = match (p, answer.patched) {
                (Profile::Selected, _) => apiserver::Expect::Injected(hosts.clone()),
                (Profile::All, true) => apiserver::Expect::AtLeast(args.services),
                (Profile::All, false) => apiserver::Expect::Untouched,
            };
            for &c in &args.pod_concurrency {
                let s = apiserver::series(client, &ns, &webhook, Some(*p), c, args.pods, &expect, None).await;
                if s.reviews.as_ref().is_some_and(|h| h.count != (s.latencies.len() + s.failed) as u64) {
                    log(format!("B {} C={c}: reviews ≠ creates: {:?}", p.name(), s.reviews.as_ref().map(|h| h.count)));
                }
                log(format!(
                    "B {} C={c}: p50 {} p99 {}, failed {}, unverified {} {:?}",
                    p.name(),
                    report::ms(s.quantile(0.5)),
                    report::ms(s.quantile(0.99)),
                    s.failed,
                    s.unverified,
                    s.first_problem.as_ref().or(s.first_error.as_ref())
                ));
                phase_b.push(s);
            }
        }
        apiserver::unregister(client).await;
        if args.profiles.contains(&Profile::Selected) {
            let expect = apiserver::Expect::Injected(hosts.clone());
            for &c in &args.pod_concurrency {
                let s = apiserver::series(client, &ns, &webhook, None, c, args.pods, &expect, Some(&injected)).await;
                log(format!(
                    "B injected pod, no webhook, C={c}: p50 {} p99 {}, unverified {}",
                    report::ms(s.quantile(0.5)),
                    report::ms(s.quantile(0.99)),
                    s.unverified
                ));
                phase_b.push(s);
            }
        }
    }
    webhook.stop().await?;

    let report = Report {
        args,
        machine,
        load_avg: (load_before, report::load_avg()),
        command,
        setup: setup_time,
        answers,
        request_bytes,
        phase_a,
        phase_b,
    };
    Ok(report.markdown())
}
