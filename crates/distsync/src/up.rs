//! `distsync up`: the whole system on this machine, as child processes of this binary: the lock
//! cluster, a queue node and the cache nodes c1-c3 (HTTP 7201-7203, peer 7301-7303, RESP
//! 7501-7503, in-process backing store).

use anyhow::Context;
use clap::Args;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    child: Child,
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
    runtime.block_on(crate::serve::shutdown_signal());
    stop_all(&mut services);
    if args.clean {
        std::fs::remove_dir_all(&args.data_dir)
            .with_context(|| format!("removing {}", args.data_dir.display()))?;
    }
    Ok(())
}

/// Starts a child whose output lines are prefixed with its name.
fn spawn(name: String, endpoint: String, mut command: Command) -> anyhow::Result<Service> {
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
        let prefix = name.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                println!("{prefix:>7} | {line}");
            }
        });
    }
    Ok(Service {
        name,
        endpoint,
        child,
    })
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
    for mut service in services.drain(..) {
        let pid = service.child.id();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        running.push((service.name.clone(), pid));
        let exited = exited.clone();
        std::thread::spawn(move || {
            let _ = service.child.wait();
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
