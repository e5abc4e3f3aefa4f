//! `distsync up`: the whole system on this machine, as child processes of this binary: the lock
//! cluster, a queue node and the cache nodes c1-c3 (HTTP 7201-7203, peer 7301-7303, RESP
//! 7501-7503, in-process backing store).
//!
//! `up` also supervises its children: a node that exits while `up` runs (a crash, or
//! `POST /v1/admin/crash` from `distsync demo`) is started again after a short delay, so the
//! system heals back to full size. Lock nodes run with `--allow-fault-injection`.

use anyhow::Context;
use clap::Args;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Delay before restarting a node that exited; doubled while it keeps failing fast.
const RESTART_DELAY_MIN: Duration = Duration::from_secs(1);
const RESTART_DELAY_MAX: Duration = Duration::from_secs(30);
/// A node that ran at least this long before exiting is restarted after the shortest delay.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// Start every service locally on loopback; Ctrl-C stops them all.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Lock-service nodes (a Raft group).
    #[arg(long, default_value_t = 3)]
    pub lock_nodes: u64,
    /// First HTTP port of the lock nodes (BASE, BASE+1, …); their peer ports are BASE+100, ….
    #[arg(long, default_value_t = 7001)]
    pub base_port: u16,
    /// HTTP port of the queue node.
    #[arg(long, default_value_t = 7400)]
    pub queue_port: u16,
    /// Cache nodes (c1, c2, …), each with an in-process backing store.
    #[arg(long, default_value_t = 3)]
    pub cache_nodes: u16,
    /// First HTTP port of the cache nodes (BASE, BASE+1, …); their peer ports are BASE+100, …
    /// and their Redis-protocol ports BASE+300, ….
    #[arg(long, default_value_t = 7201)]
    pub cache_base_port: u16,
    /// Where every node keeps its data.
    #[arg(long, default_value = ".distsync")]
    pub data_dir: PathBuf,
    /// Remove the data directory on exit.
    #[arg(long)]
    pub clean: bool,
    /// Use this Redis for the queue instead of the embedded backend (e.g. redis://127.0.0.1:6379).
    #[arg(long)]
    pub redis: Option<String>,
}

struct Service {
    name: String,
    endpoint: String,
    launch: Launch,
    /// `None` once it exited (and until it is restarted).
    child: Option<Child>,
    started: Instant,
    restarts: u32,
    /// When a pending restart is due.
    restart_at: Option<Instant>,
}

/// How to start a node again: the command it was first started with.
struct Launch {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
}

impl Launch {
    fn of(command: &Command) -> Self {
        Launch {
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            envs: command
                .get_envs()
                .map(|(key, value)| (key.to_owned(), value.map(ToOwned::to_owned)))
                .collect(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command
    }
}

pub fn run(args: UpArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the distsync binary")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let lock_port = |id: u64| args.base_port + (id - 1) as u16;
    let raft_port = |id: u64| args.base_port + 100 + (id - 1) as u16;
    let cluster = (1..=args.lock_nodes)
        .map(|id| {
            format!(
                "{id}=127.0.0.1:{}/127.0.0.1:{}",
                lock_port(id),
                raft_port(id)
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut services = Vec::new();
    for id in 1..=args.lock_nodes {
        let data = args.data_dir.join(format!("lock{id}"));
        let mut command = Command::new(&exe);
        command.args([
            "serve",
            "lock",
            "--id",
            &id.to_string(),
            "--cluster",
            &cluster,
        ]);
        command.arg("--data-dir").arg(&data);
        // `distsync demo` kills the leader through POST /v1/admin/crash; `up` restarts it.
        command.arg("--allow-fault-injection");
        services.push(spawn(
            format!("lock{id}"),
            format!("http://127.0.0.1:{}", lock_port(id)),
            command,
        )?);
    }
    let queue_port = args.queue_port;
    let shards = match &args.redis {
        Some(url) => format!("r1={url}"),
        None => format!("embedded:{}", args.data_dir.join("queue").display()),
    };
    let mut queue = Command::new(&exe);
    queue.args([
        "serve",
        "queue",
        "--listen",
        &format!("127.0.0.1:{queue_port}"),
        "--shards",
        &shards,
    ]);
    services.push(spawn(
        "queue1".into(),
        format!("http://127.0.0.1:{queue_port}"),
        queue,
    )?);

    let cache_http = |n: u16| args.cache_base_port + n - 1;
    let cache_cluster = (1..=args.cache_nodes)
        .map(|n| {
            format!(
                "c{n}=127.0.0.1:{}/127.0.0.1:{}",
                cache_http(n),
                cache_http(n) + 100
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    for n in 1..=args.cache_nodes {
        let mut cache = Command::new(&exe);
        cache.args([
            "serve",
            "cache",
            "--id",
            &format!("c{n}"),
            "--cluster",
            &cache_cluster,
            "--store",
            "memory",
            "--resp",
            &format!("127.0.0.1:{}", cache_http(n) + 300),
        ]);
        services.push(spawn(
            format!("c{n}"),
            format!("http://127.0.0.1:{}", cache_http(n)),
            cache,
        )?);
    }

    println!();
    println!("{:<10} {:<28} try", "node", "endpoint");
    for service in &services {
        let hint = if service.name.starts_with("lock") {
            "distsync cluster status".to_string()
        } else if service.name.starts_with("queue") {
            "distsync queue publish demo hello".to_string()
        } else {
            let resp = service
                .endpoint
                .rsplit(':')
                .next()
                .and_then(|port| port.parse::<u16>().ok())
                .map_or(0, |port| port + 300);
            format!(
                "distsync cache get k --node {}   (RESP: redis-cli -p {resp})",
                service.name
            )
        };
        println!("{:<10} {:<28} {}", service.name, service.endpoint, hint);
    }
    println!(
        "\ndata in {}; Ctrl-C stops everything\n",
        args.data_dir.display()
    );

    let ready = wait_ready(&services, Duration::from_secs(30));
    if !ready {
        eprintln!("warning: not every node reported ready within 30 s; see the logs above");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(supervise(&mut services))?;
    stop_all(&mut services);
    if args.clean {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("removing {}", args.data_dir.display()))?;
    }
    Ok(())
}

/// Restarts children that exit, until Ctrl-C or SIGTERM. Woken by SIGCHLD and by pending
/// restarts coming due.
async fn supervise(services: &mut [Service]) -> anyhow::Result<()> {
    let shutdown = crate::serve::shutdown_signal();
    tokio::pin!(shutdown);
    #[cfg(unix)]
    let mut child_exits = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .context("listening for SIGCHLD")?;
    loop {
        // Children that exited before the handler was installed are found by this pass too.
        reap_exited(services);
        let next_restart = services
            .iter()
            .filter_map(|service| service.restart_at)
            .min();
        let restart_due = async {
            match next_restart {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let child_exit = child_exits.recv();
        #[cfg(not(unix))]
        let child_exit = tokio::time::sleep(Duration::from_millis(500));
        tokio::select! {
            // Ctrl-C reaches the children too: shutting down wins over restarting them.
            biased;
            () = &mut shutdown => return Ok(()),
            () = restart_due => restart_due_services(services),
            _ = child_exit => {}
        }
    }
}

fn reap_exited(services: &mut [Service]) {
    for service in services.iter_mut() {
        let Some(child) = service.child.as_mut() else {
            continue;
        };
        let status = match child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => continue,
            Err(error) => {
                println!("{:>7} | cannot check {}: {error}", "up", service.name);
                continue;
            }
        };
        service.child = None;
        let ran = service.started.elapsed();
        let delay = restart_delay_after(service.restarts, ran);
        println!(
            "{:>7} | {} exited unexpectedly ({}) after {:.1} s; restarting it in {} s",
            "up",
            service.name,
            describe(status),
            ran.as_secs_f64(),
            delay.as_secs()
        );
        service.restart_at = Some(Instant::now() + delay);
    }
}

/// Fast failures back off: 1 s, 2 s, 4 s, … up to 30 s.
fn restart_delay_after(restarts: u32, ran: Duration) -> Duration {
    if ran >= STABLE_RUN || restarts == 0 {
        return RESTART_DELAY_MIN;
    }
    RESTART_DELAY_MIN
        .saturating_mul(1 << restarts.min(5))
        .min(RESTART_DELAY_MAX)
}

fn restart_due_services(services: &mut [Service]) {
    let now = Instant::now();
    for service in services.iter_mut() {
        if service.restart_at.is_none_or(|at| at > now) {
            continue;
        }
        service.restart_at = None;
        service.restarts += 1;
        service.started = Instant::now();
        match start_child(&service.name, service.launch.command()) {
            Ok(child) => {
                println!(
                    "{:>7} | {} restarted (pid {}, restart #{})",
                    "up",
                    service.name,
                    child.id(),
                    service.restarts
                );
                service.child = Some(child);
            }
            Err(error) => {
                let delay = restart_delay_after(service.restarts, Duration::ZERO);
                println!(
                    "{:>7} | restarting {} failed: {error:#}; next try in {} s",
                    "up",
                    service.name,
                    delay.as_secs()
                );
                service.restart_at = Some(now + delay);
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        let name = match signal {
            6 => " SIGABRT",
            9 => " SIGKILL",
            15 => " SIGTERM",
            _ => "",
        };
        return format!("signal {signal}{name}");
    }
    status.to_string()
}

/// Starts a child whose output lines are prefixed with its name.
fn spawn(name: String, endpoint: String, command: Command) -> anyhow::Result<Service> {
    let launch = Launch::of(&command);
    let child = start_child(&name, command)?;
    Ok(Service {
        name,
        endpoint,
        launch,
        child: Some(child),
        started: Instant::now(),
        restarts: 0,
        restart_at: None,
    })
}

fn start_child(name: &str, mut command: Command) -> anyhow::Result<Child> {
    let mut child = command
        .env("DISTSYNC_LOG_FORMAT", "pretty")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    for stream in [
        child
            .stdout
            .take()
            .map(|out| Box::new(out) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|err| Box::new(err) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let prefix = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("{prefix:>7} | {line}");
            }
        });
    }
    Ok(child)
}

fn wait_ready(services: &[Service], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(_) => return false,
    };
    runtime.block_on(async {
        let http = reqwest::Client::new();
        for service in services {
            loop {
                let url = format!("{}/readyz", service.endpoint);
                let ok = http
                    .get(&url)
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
                if ok {
                    break;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!("all {} nodes ready", services.len());
        true
    })
}

fn stop_all(services: &mut Vec<Service>) {
    // SIGTERM lets each node shut down cleanly; SIGKILL follows for any still running after 5 s.
    let (exited, exits) = std::sync::mpsc::channel();
    let mut running = Vec::new();
    for service in services.drain(..) {
        let Some(mut child) = service.child else {
            continue;
        };
        let pid = child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        running.push((service.name.clone(), pid));
        let exited = exited.clone();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = exited.send(pid);
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !running.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match exits.recv_timeout(left) {
            Ok(pid) => running.retain(|(_, running_pid)| *running_pid != pid),
            Err(_) => {
                for (name, pid) in running.drain(..) {
                    eprintln!("{name} did not stop in time; killing it");
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
    }
}
