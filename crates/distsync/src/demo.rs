//! `distsync demo`: a paced, narrated tour of every feature against a running system (from
//! `distsync up` or Docker Compose). Each step says what is about to happen, does it through
//! the public HTTP APIs, and prints the evidence: node ids, terms, fencing tokens, delivery
//! counts, MESI states and the metrics that moved.
//!
//! The cache part speaks plain HTTP/JSON (`/v1/cache/{key}`, `/coherence`, `/v1/stats`), so this
//! module does not depend on the cache crates.

use anyhow::{Context, bail};
use clap::Args;
use distsync_api::{ClusterStatus, ErrorCode, LockMode, PublishMessage, ReceiveRequest};
use distsync_client::queue::QueueClient;
use distsync_client::{Client, ClientConfig, ClientError, LockGuard, Session};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Tour the running system: failover, locks, deadlock, queue, cache, metrics.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Lock nodes' HTTP addresses (the ones `distsync up` starts by default).
    #[arg(
        long,
        env = "DISTSYNC_LOCK_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub lock_endpoints: Vec<String>,
    /// Queue node(s).
    #[arg(
        long,
        env = "DISTSYNC_QUEUE_ADDR",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    pub queue_addr: Vec<String>,
    /// Cache nodes as `NAME=HOST:PORT` (or `HOST:PORT`, named c1, c2, … in order).
    #[arg(
        long,
        env = "DISTSYNC_CACHE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "c1=127.0.0.1:7201,c2=127.0.0.1:7202,c3=127.0.0.1:7203"
    )]
    pub cache_endpoints: Vec<String>,
    /// Pause between steps so a person can follow (0 for scripts and tests).
    #[arg(long, env = "DISTSYNC_DEMO_STEP_DELAY_MS", default_value_t = 800)]
    pub step_delay_ms: u64,
    /// Do not kill the lock leader (step 1 then only shows the cluster).
    #[arg(long)]
    pub no_failover: bool,
}

const STEPS: u32 = 6;
/// How long a new leader may take before the demo calls the failover failed.
const ELECTION_LIMIT: Duration = Duration::from_secs(15);
/// How long the demo waits for the crashed node to be restarted by its supervisor.
const RESTART_LIMIT: Duration = Duration::from_secs(20);
/// Visibility timeout of the demo's consumers: short, so redelivery is seen within seconds.
const VISIBILITY_MS: u64 = 1_000;

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(Tour::new(args)?.run())
}

struct Tour {
    args: DemoArgs,
    http: reqwest::Client,
    locks: Client,
    queue: QueueClient,
    /// Distinguishes this run's locks, queue and keys from earlier runs on the same data.
    run_id: String,
    step: u32,
    /// Lock endpoints of nodes this tour crashed: their counters restarted from 0.
    crashed: Vec<String>,
}

impl Tour {
    fn new(args: DemoArgs) -> anyhow::Result<Self> {
        let locks = Client::new(ClientConfig::new(args.lock_endpoints.clone()))
            .context("building the lock client")?;
        let queue = QueueClient::new(&args.queue_addr);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        Ok(Tour {
            args,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(5))
                .build()?,
            locks,
            queue,
            run_id: format!("{:x}", millis % (1 << 40)),
            step: 0,
            crashed: Vec::new(),
        })
    }

    async fn run(mut self) -> anyhow::Result<()> {
        println!("distsync demo (run {})", self.run_id);
        println!("  lock nodes:  {}", self.args.lock_endpoints.join(", "));
        println!("  queue nodes: {}", self.args.queue_addr.join(", "));
        println!("  cache nodes: {}", self.args.cache_endpoints.join(", "));
        let before = self.scrape_all().await;
        self.failover().await?;
        self.shared_and_exclusive().await?;
        self.deadlock().await?;
        self.queue_tour().await?;
        self.cache_tour().await?;
        self.metrics_moved(&before).await;
        println!("\ndemo finished: every step ran.");
        Ok(())
    }

    // ---- narration ------------------------------------------------------------------------

    async fn begin(&mut self, title: &str) {
        if self.step > 0 {
            self.pause().await;
        }
        self.step += 1;
        println!("\n=== [{}/{STEPS}] {title} ===", self.step);
    }

    /// What is about to happen.
    fn next(&self, text: impl AsRef<str>) {
        println!("  > {}", text.as_ref());
    }

    /// What happened: the evidence.
    fn seen(&self, text: impl AsRef<str>) {
        println!("  ✓ {}", text.as_ref());
    }

    fn note(&self, text: impl AsRef<str>) {
        println!("    {}", text.as_ref());
    }

    /// Pacing for a person watching; never used to wait for the system.
    async fn pause(&self) {
        if self.args.step_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.args.step_delay_ms)).await;
        }
    }

    // ---- step 1: leader election and failover ----------------------------------------------

    async fn cluster_view(&self) -> Vec<(String, Option<ClusterStatus>)> {
        let mut view = Vec::new();
        for endpoint in &self.args.lock_endpoints {
            view.push((
                endpoint.clone(),
                self.locks.cluster_status_of(endpoint).await.ok(),
            ));
        }
        view
    }

    fn print_cluster(&self, view: &[(String, Option<ClusterStatus>)]) {
        println!(
            "    {:<6} {:<22} {:<10} {:>5} {:>7} {:>8}",
            "node", "endpoint", "role", "term", "leader", "commit"
        );
        for (endpoint, status) in view {
            match status {
                Some(s) => println!(
                    "    {:<6} {:<22} {:<10} {:>5} {:>7} {:>8}",
                    s.id,
                    endpoint,
                    s.role,
                    s.term,
                    s.leader_id.map_or("-".into(), |id| id.to_string()),
                    s.commit_index
                ),
                None => println!("    {:<6} {:<22} unreachable", "?", endpoint),
            }
        }
    }

    /// The leader with the highest term any node reports, polling until one is known.
    async fn current_leader(&self, limit: Duration) -> Option<(String, ClusterStatus)> {
        let deadline = Instant::now() + limit;
        loop {
            let leader = self
                .cluster_view()
                .await
                .into_iter()
                .filter_map(|(endpoint, status)| Some((endpoint, status?)))
                .filter(|(_, status)| status.role == "leader")
                .max_by_key(|(_, status)| status.term);
            if leader.is_some() || Instant::now() > deadline {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn failover(&mut self) -> anyhow::Result<()> {
        self.begin("Leader election and failover (lock service, Raft)")
            .await;
        self.next("ask every lock node for its own view (GET /v1/cluster)");
        let view = self.cluster_view().await;
        self.print_cluster(&view);
        if view.iter().all(|(_, status)| status.is_none()) {
            bail!(
                "no lock node reachable at {}; start the system with `distsync up` (or Docker \
                 Compose) or point --lock-endpoints / DISTSYNC_LOCK_ENDPOINTS at it",
                self.args.lock_endpoints.join(", ")
            );
        }
        let Some((leader_endpoint, leader)) = self.current_leader(Duration::from_secs(10)).await
        else {
            bail!("no lock node reports a leader within 10 s");
        };
        self.seen(format!(
            "node {} leads in term {}; the others follow it",
            leader.id, leader.term
        ));
        if self.args.no_failover {
            self.note("failover skipped (--no-failover)");
            return Ok(());
        }
        if self.args.lock_endpoints.len() < 3 {
            self.note(
                "failover skipped: fewer than 3 lock nodes given, so no majority would survive \
                 the crash",
            );
            return Ok(());
        }
        self.pause().await;
        self.next(format!(
            "crash the leader, node {} at {leader_endpoint} (POST /v1/admin/crash: the process \
             aborts, no clean shutdown)",
            leader.id
        ));
        let response = self
            .http
            .post(format!("http://{leader_endpoint}/v1/admin/crash"))
            .send()
            .await
            .with_context(|| format!("POST /v1/admin/crash to {leader_endpoint}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::FORBIDDEN {
            let body = response.text().await.unwrap_or_default();
            self.note(format!("node {} refused: 403 {body}", leader.id));
            self.note(
                "fault injection is off on the lock nodes: `distsync up` turns it on; under \
                 Compose set DISTSYNC_ALLOW_FAULT_INJECTION=true in deploy/.env. Failover skipped.",
            );
            return Ok(());
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("POST /v1/admin/crash answered {status}: {body}");
        }
        let crashed_at = Instant::now();
        self.crashed.push(leader_endpoint.clone());
        self.seen(format!("node {} answered 202 and aborted", leader.id));
        self.next("watch the surviving nodes elect a new leader");
        let survivors: Vec<String> = self
            .args
            .lock_endpoints
            .iter()
            .filter(|endpoint| **endpoint != leader_endpoint)
            .cloned()
            .collect();
        let new_leader = loop {
            let mut found = None;
            for endpoint in &survivors {
                if let Ok(status) = self.locks.cluster_status_of(endpoint).await
                    && status.role == "leader"
                    && status.id != leader.id
                    && status.term > leader.term
                {
                    found = Some(status);
                }
            }
            if let Some(found) = found {
                break found;
            }
            if crashed_at.elapsed() > ELECTION_LIMIT {
                bail!(
                    "no new leader among {} within {} s of the crash",
                    survivors.join(", "),
                    ELECTION_LIMIT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let took = crashed_at.elapsed();
        self.seen(format!(
            "new leader elected: node {} in term {} (was node {} in term {}), {} ms after the crash",
            new_leader.id,
            new_leader.term,
            leader.id,
            leader.term,
            took.as_millis()
        ));
        self.print_cluster(&self.cluster_view().await);
        self.next(format!(
            "wait for node {} to come back (its supervisor restarts it: `distsync up`, or \
             Compose's restart policy)",
            leader.id
        ));
        let back = loop {
            if let Ok(status) = self.locks.cluster_status_of(&leader_endpoint).await
                && status.leader_id.is_some()
            {
                break Some(status);
            }
            if crashed_at.elapsed() > RESTART_LIMIT {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match back {
            Some(status) => self.seen(format!(
                "node {} is back after {:.1} s: {} in term {}, following node {}",
                status.id,
                crashed_at.elapsed().as_secs_f64(),
                status.role,
                status.term,
                status.leader_id.unwrap_or_default()
            )),
            None => self.note(format!(
                "node {} is not back within {} s; a node started by hand must be restarted by \
                 hand (the cluster keeps serving with 2 of 3)",
                leader.id,
                RESTART_LIMIT.as_secs()
            )),
        }
        Ok(())
    }

    // ---- step 2: shared vs exclusive --------------------------------------------------------

    async fn session(&self) -> anyhow::Result<Session> {
        Ok(self.locks.create_session(Duration::from_secs(10)).await?)
    }

    async fn wait_for_waiter(&self, name: &str, session: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = self.locks.lock_state(name).await?;
            if state.waiters.iter().any(|w| w.session_id == session) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("session {session} never appeared among the waiters of {name}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn print_lock(&self, name: &str) -> anyhow::Result<()> {
        let state = self.locks.lock_state(name).await?;
        let holders: Vec<String> = state
            .holders
            .iter()
            .map(|h| {
                format!(
                    "session {} ({}, token {})",
                    h.session_id,
                    mode_name(h.mode),
                    h.fencing_token
                )
            })
            .collect();
        let waiters: Vec<String> = state
            .waiters
            .iter()
            .map(|w| format!("session {} ({})", w.session_id, mode_name(w.mode)))
            .collect();
        self.note(format!(
            "{name}: holders [{}], waiters [{}]",
            holders.join(", "),
            waiters.join(", ")
        ));
        Ok(())
    }

    async fn shared_and_exclusive(&mut self) -> anyhow::Result<()> {
        self.begin("Shared vs exclusive locks, fencing tokens")
            .await;
        let name = format!("demo-{}-report", self.run_id);
        let (alice, bob, carol) = (
            self.session().await?,
            self.session().await?,
            self.session().await?,
        );
        self.next(format!(
            "sessions {} (alice) and {} (bob) take {name} in shared mode",
            alice.id(),
            bob.id()
        ));
        let alice_guard = alice.lock(&name, LockMode::Shared, Duration::ZERO).await?;
        let bob_guard = bob.lock(&name, LockMode::Shared, Duration::ZERO).await?;
        self.seen(format!(
            "both granted at once: alice token {}, bob token {}",
            alice_guard.fencing_token(),
            bob_guard.fencing_token()
        ));
        self.pause().await;
        self.next(format!(
            "session {} (carol) asks for it exclusively and waits",
            carol.id()
        ));
        let carol_id = carol.id();
        let carol_name = name.clone();
        let carol_wait = tokio::spawn(async move {
            let started = Instant::now();
            let grant = carol
                .lock(&carol_name, LockMode::Exclusive, Duration::from_secs(15))
                .await;
            (carol, grant, started.elapsed())
        });
        self.wait_for_waiter(&name, carol_id).await?;
        self.print_lock(&name).await?;
        self.seen("carol queues behind the two shared holders");
        self.pause().await;
        let (alice_token, bob_token) = (alice_guard.fencing_token(), bob_guard.fencing_token());
        self.next("alice releases; bob still holds it shared, so carol keeps waiting");
        alice_guard.release().await?;
        self.print_lock(&name).await?;
        self.next("bob releases");
        bob_guard.release().await?;
        let (carol, grant, waited) = carol_wait.await.context("carol's task")?;
        let carol_guard = grant.context("carol's exclusive acquire")?;
        let carol_token = carol_guard.fencing_token();
        self.seen(format!(
            "carol granted exclusive after waiting {} ms, token {carol_token}",
            waited.as_millis()
        ));
        self.print_lock(&name).await?;
        let increasing = carol_token > alice_token.max(bob_token);
        self.seen(format!(
            "fencing tokens alice {alice_token}, bob {bob_token}, carol {carol_token}: {}",
            if increasing {
                "increasing — a storage server that saw carol's token refuses any older one"
            } else {
                "NOT increasing"
            }
        ));
        if !increasing {
            bail!("fencing tokens did not increase");
        }
        carol_guard.release().await?;
        for session in [alice, bob, carol] {
            session.close().await?;
        }
        Ok(())
    }

    // ---- step 3: deadlock -------------------------------------------------------------------

    async fn deadlock(&mut self) -> anyhow::Result<()> {
        self.begin("A deadlock detected and refused").await;
        let left = format!("demo-{}-left", self.run_id);
        let right = format!("demo-{}-right", self.run_id);
        let (dave, erin) = (self.session().await?, self.session().await?);
        self.next(format!(
            "session {} (dave) takes {left}; session {} (erin) takes {right}",
            dave.id(),
            erin.id()
        ));
        let dave_left = dave
            .lock(&left, LockMode::Exclusive, Duration::ZERO)
            .await?;
        let erin_right = erin
            .lock(&right, LockMode::Exclusive, Duration::ZERO)
            .await?;
        self.seen(format!(
            "dave holds {left} (token {}), erin holds {right} (token {})",
            dave_left.fencing_token(),
            erin_right.fencing_token()
        ));
        self.next(format!("dave asks for {right} and waits for erin"));
        let dave_id = dave.id();
        let dave_right_name = right.clone();
        let dave_wait = tokio::spawn(async move {
            let grant = dave
                .lock(
                    &dave_right_name,
                    LockMode::Exclusive,
                    Duration::from_secs(15),
                )
                .await;
            (dave, grant)
        });
        self.wait_for_waiter(&right, dave_id).await?;
        self.print_lock(&right).await?;
        self.pause().await;
        self.next(format!(
            "erin asks for {left}: she would wait for dave, who waits for her"
        ));
        let refused = erin
            .lock(&left, LockMode::Exclusive, Duration::from_secs(5))
            .await;
        let cycle = match refused {
            Err(ClientError::Api { status, body }) if body.code == ErrorCode::Deadlock => {
                let cycle = body.cycle.unwrap_or_default();
                let path: Vec<String> = cycle
                    .iter()
                    .chain(cycle.first())
                    .map(|session| format!("session {session}"))
                    .collect();
                self.seen(format!(
                    "deadlock refused: {status} deadlock, cycle {} (\"{}\")",
                    path.join(" → "),
                    body.message
                ));
                cycle
            }
            Err(error) => bail!("expected a deadlock refusal, got: {error}"),
            Ok(_) => bail!("erin was granted {left} although it closes a cycle"),
        };
        if !(cycle.contains(&dave_id) && cycle.contains(&erin.id())) {
            bail!("the reported cycle {cycle:?} does not name both sessions");
        }
        self.note("no one was left waiting forever; the lock table is unchanged");
        self.next(format!("erin gives up and releases {right}"));
        erin_right.release().await?;
        let (dave, grant) = dave_wait.await.context("dave's task")?;
        let dave_right = grant.context("dave's wait for the right lock")?;
        self.seen(format!(
            "dave's wait is granted: {right} token {}",
            dave_right.fencing_token()
        ));
        release_all([dave_left, dave_right]).await?;
        dave.close().await?;
        erin.close().await?;
        Ok(())
    }

    // ---- step 4: queue ----------------------------------------------------------------------

    fn receive_request(&self, consumer: &str, max: u32) -> ReceiveRequest {
        ReceiveRequest {
            group: "demo".into(),
            consumer: consumer.into(),
            max,
            wait_ms: 2_000,
            visibility_ms: VISIBILITY_MS,
            resume: false,
        }
    }

    async fn queue_tour(&mut self) -> anyhow::Result<()> {
        self.begin("Queue: publish, consume, a crashed consumer, the dead-letter queue")
            .await;
        let queue = format!("demo-{}", self.run_id);
        if let Err(error) = self.queue.stats(&queue).await {
            bail!(
                "queue service not reachable at {}: {error}; point --queue-addr / \
                 DISTSYNC_QUEUE_ADDR at it",
                self.args.queue_addr.join(", ")
            );
        }
        self.next(format!("publish 3 orders to queue {queue}"));
        let orders: Vec<PublishMessage> = (1..=3)
            .map(|n| PublishMessage {
                key: Some(format!("customer-{n}")),
                body: format!("order-{n}"),
                headers: None,
            })
            .collect();
        let ids = self.queue.publish(&queue, orders).await?;
        self.seen(format!("stored, ids {}", ids.join(", ")));
        self.next("worker-a consumes them in group `demo` and acks each");
        let mut consumed = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while consumed < ids.len() {
            if Instant::now() > deadline {
                bail!("only {consumed} of {} orders delivered", ids.len());
            }
            let response = self
                .queue
                .receive(&queue, &self.receive_request("worker-a", 10))
                .await?;
            for message in &response.messages {
                self.note(format!(
                    "worker-a got {} `{}` (partition {}, delivery_count {})",
                    message.id, message.body, message.partition, message.delivery_count
                ));
            }
            let receipts: Vec<String> = response
                .messages
                .iter()
                .map(|m| m.receipt.clone())
                .collect();
            consumed += receipts.len();
            if !receipts.is_empty() {
                self.queue.ack(&queue, "demo", receipts).await?;
            }
        }
        self.seen(format!("{consumed} delivered and acknowledged"));
        self.pause().await;

        self.next(format!(
            "publish `invoice-7`; worker-b receives it (visibility {VISIBILITY_MS} ms) and \
             crashes before acking"
        ));
        let invoice = self.publish_one(&queue, "invoice-7").await?;
        let first = self
            .receive_until(&queue, "worker-b", |m| m.id == invoice)
            .await?;
        let received_at = Instant::now();
        self.seen(format!(
            "worker-b got {} with delivery_count {} — then nothing: no ack, no nack",
            first.id, first.delivery_count
        ));
        self.next(
            "worker-c keeps consuming; the message must come back when its visibility lapses",
        );
        let again = self
            .receive_until(&queue, "worker-c", |m| m.id == invoice)
            .await?;
        self.seen(format!(
            "message {} redelivered to worker-c after {} ms with delivery_count {}",
            again.id,
            received_at.elapsed().as_millis(),
            again.delivery_count
        ));
        if again.delivery_count < 2 {
            bail!("a redelivery must carry delivery_count ≥ 2");
        }
        self.queue
            .ack(&queue, "demo", vec![again.receipt.clone()])
            .await?;
        self.note("worker-c acked it: delivered at least once, processed once");
        self.pause().await;

        self.next("publish `poison`: every consumer that gets it fails and nacks it");
        let poison = self.publish_one(&queue, "poison").await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let dead = loop {
            if Instant::now() > deadline {
                bail!("`poison` was never dead-lettered within 30 s");
            }
            let response = self
                .queue
                .receive(&queue, &self.receive_request("worker-d", 10))
                .await?;
            for message in &response.messages {
                self.note(format!(
                    "worker-d got {} (delivery_count {}) → nack",
                    message.id, message.delivery_count
                ));
                self.queue
                    .nack(&queue, "demo", vec![message.receipt.clone()], None)
                    .await?;
            }
            let dead = self.dead_letters(&queue).await?;
            if let Some(dead) = dead.into_iter().find(|m| m["id"] == poison.as_str()) {
                break dead;
            }
        };
        self.seen(format!(
            "message {poison} dead-lettered after {} deliveries (the queue's max-deliveries), \
             group {}",
            dead["delivery_count"], dead["group"]
        ));
        self.note(format!("GET /v1/queues/{queue}/dead-letters → {dead}"));
        let stats = self.queue.stats(&queue).await?;
        let (length, pending, dead_letters) =
            stats.partitions.iter().fold((0, 0, 0), |(l, p, d), row| {
                (l + row.length, p + row.pending, d + row.dead_letters)
            });
        self.seen(format!(
            "queue {queue}: {length} entries, {pending} pending, {dead_letters} dead-lettered"
        ));
        Ok(())
    }

    async fn publish_one(&self, queue: &str, body: &str) -> anyhow::Result<String> {
        let ids = self
            .queue
            .publish(
                queue,
                vec![PublishMessage {
                    key: None,
                    body: body.into(),
                    headers: None,
                }],
            )
            .await?;
        ids.into_iter()
            .next()
            .context("a publish of one message returned no id")
    }

    /// Receives as `consumer` until a message matching `wanted` arrives; others are acked.
    async fn receive_until(
        &self,
        queue: &str,
        consumer: &str,
        wanted: impl Fn(&distsync_api::ReceivedMessage) -> bool,
    ) -> anyhow::Result<distsync_api::ReceivedMessage> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if Instant::now() > deadline {
                bail!("{consumer} did not receive the expected message within 15 s");
            }
            let response = self
                .queue
                .receive(queue, &self.receive_request(consumer, 1))
                .await?;
            for message in response.messages {
                if wanted(&message) {
                    return Ok(message);
                }
                self.queue.ack(queue, "demo", vec![message.receipt]).await?;
            }
        }
    }

    async fn dead_letters(&self, queue: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let base = http_base(&self.args.queue_addr[0]);
        let body: serde_json::Value = self
            .http
            .get(format!("{base}/v1/queues/{queue}/dead-letters"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }

    // ---- step 5: cache ----------------------------------------------------------------------

    fn cache_nodes(&self) -> Vec<(String, String)> {
        self.args
            .cache_endpoints
            .iter()
            .enumerate()
            .map(|(index, spec)| match spec.split_once('=') {
                Some((name, address)) => (name.to_owned(), http_base(address)),
                None => (format!("c{}", index + 1), http_base(spec)),
            })
            .collect()
    }

    async fn reachable_cache_nodes(&self) -> Vec<(String, String)> {
        let mut reachable = Vec::new();
        for (name, base) in self.cache_nodes() {
            let ok = self
                .http
                .get(format!("{base}/v1/stats"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ok {
                reachable.push((name, base));
            }
        }
        reachable
    }

    async fn coherence(&self, base: &str, key: &str) -> anyhow::Result<String> {
        let view: serde_json::Value = self
            .http
            .get(format!("{base}/v1/cache/{key}/coherence"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let states = view["states"]
            .as_object()
            .map(|states| {
                states
                    .iter()
                    .map(|(node, state)| format!("{node}={}", state.as_str().unwrap_or("?")))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        Ok(format!(
            "MESI states of {key}: {states}  (home {})",
            view["home"].as_str().unwrap_or("?")
        ))
    }

    async fn cache_put(&self, base: &str, key: &str, value: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .put(format!("{base}/v1/cache/{key}"))
            .json(&serde_json::json!({ "value": value }))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("PUT {key} answered {status}: {body}");
        }
        Ok(body["version"].to_string())
    }

    async fn cache_get(&self, base: &str, key: &str) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .get(format!("{base}/v1/cache/{key}"))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {key} answered {status}: {body}");
        }
        Ok(body)
    }

    async fn cache_tour(&mut self) -> anyhow::Result<()> {
        self.begin("Cache: MESI states across nodes, invalidation, eviction and write-back")
            .await;
        let nodes = self.reachable_cache_nodes().await;
        if nodes.is_empty() {
            let addresses: Vec<String> = self.cache_nodes().into_iter().map(|(_, b)| b).collect();
            println!(
                "  ! cache service not reachable at {}, skipping the cache tour",
                addresses.join(", ")
            );
            self.note(
                "(start the cache nodes, or point --cache-endpoints / DISTSYNC_CACHE_ENDPOINTS at them)",
            );
            return Ok(());
        }
        let names: Vec<&str> = nodes.iter().map(|(name, _)| name.as_str()).collect();
        self.note(format!("cache nodes answering: {}", names.join(", ")));
        let before = self.scrape_nodes(&nodes).await;
        let key = format!("demo-{}", self.run_id);
        let (writer, writer_base) = &nodes[0];
        let (last, last_base) = &nodes[nodes.len() - 1];

        self.next(format!("write {key} on {writer}"));
        let version = self
            .cache_put(writer_base, &key, &format!("written on {writer}"))
            .await?;
        self.seen(format!("{writer} wrote version {version}"));
        self.note(self.coherence(writer_base, &key).await?);
        for (reader, base) in &nodes[1..] {
            self.pause().await;
            self.next(format!("read {key} on {reader}"));
            let entry = self.cache_get(base, &key).await?;
            self.seen(format!(
                "{reader} read {} (version {}), its copy is now {}",
                entry["value"], entry["version"], entry["state"]
            ));
            self.note(self.coherence(base, &key).await?);
        }
        self.pause().await;
        self.next(format!(
            "write {key} on {last}: every other copy must be invalidated first"
        ));
        let version = self
            .cache_put(last_base, &key, &format!("overwritten on {last}"))
            .await?;
        self.seen(format!("{last} wrote version {version}"));
        self.note(self.coherence(last_base, &key).await?);
        self.next(format!("read it back on {writer}"));
        let entry = self.cache_get(writer_base, &key).await?;
        self.seen(format!(
            "{writer} reads {} (version {}), state {}: never the stale value",
            entry["value"], entry["version"], entry["state"]
        ));
        self.note(self.coherence(writer_base, &key).await?);

        self.pause().await;
        self.eviction(writer, writer_base).await?;

        self.next("cache metrics that moved during this step (GET /metrics before and after)");
        let after = self.scrape_nodes(&nodes).await;
        for (name, _) in &nodes {
            self.print_deltas(
                name,
                before.get(name),
                after.get(name),
                "distsync_cache",
                false,
            );
        }
        Ok(())
    }

    async fn eviction(&self, writer: &str, base: &str) -> anyhow::Result<()> {
        /// Filling a larger store would take too long for a tour.
        const FILL_LIMIT: u64 = 2_000;
        let stats: serde_json::Value = self
            .http
            .get(format!("{base}/v1/stats"))
            .send()
            .await?
            .json()
            .await?;
        let capacity = stats["capacity"].as_u64();
        let policy = stats["policy"].as_str().unwrap_or("?");
        let write_policy = stats["write_policy"].as_str().unwrap_or("?");
        match capacity {
            Some(capacity) if capacity <= FILL_LIMIT => {
                let count = capacity + 3;
                self.next(format!(
                    "eviction: write {count} keys on {writer} (capacity {capacity} lines, \
                     {policy}, {write_policy}): dirty lines pushed out must be written back"
                ));
                for n in 0..count {
                    self.cache_put(base, &format!("demo-{}-fill-{n}", self.run_id), "filler")
                        .await?;
                }
                let after: serde_json::Value = self
                    .http
                    .get(format!("{base}/v1/stats"))
                    .send()
                    .await?
                    .json()
                    .await?;
                self.seen(format!(
                    "{writer}: evictions {} → {}, lines {} (capacity {capacity}); \
                     write-backs are counted on each key's home (see the metrics below)",
                    stats["evictions"], after["evictions"], after["lines"]
                ));
            }
            _ => {
                self.note(format!(
                    "eviction: {writer} keeps {} lines ({policy}, {write_policy}); filling it \
                     would take too long here. To watch evictions and write-backs, start the \
                     cache nodes with a small capacity (e.g. `DISTSYNC_CACHE_CAPACITY=8 distsync \
                     up`, or DISTSYNC_CACHE_CAPACITY in deploy/.env) and run the demo again",
                    capacity.map_or("unlimited".into(), |c| c.to_string())
                ));
            }
        }
        Ok(())
    }

    // ---- step 6: metrics --------------------------------------------------------------------

    async fn scrape(&self, base: &str) -> Option<BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("{base}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(parse_counters(&text))
    }

    async fn scrape_nodes(&self, nodes: &[(String, String)]) -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (name, base) in nodes {
            if let Some(counters) = self.scrape(base).await {
                snapshot.insert(name.clone(), counters);
            }
        }
        snapshot
    }

    fn all_nodes(&self) -> Vec<(String, String)> {
        let mut nodes: Vec<(String, String)> = self
            .args
            .lock_endpoints
            .iter()
            .map(|endpoint| (format!("lock {endpoint}"), http_base(endpoint)))
            .collect();
        nodes.extend(
            self.args
                .queue_addr
                .iter()
                .map(|addr| (format!("queue {addr}"), http_base(addr))),
        );
        nodes.extend(self.cache_nodes());
        nodes
    }

    async fn scrape_all(&self) -> Snapshot {
        self.scrape_nodes(&self.all_nodes()).await
    }

    fn print_deltas(
        &self,
        node: &str,
        before: Option<&BTreeMap<String, f64>>,
        after: Option<&BTreeMap<String, f64>>,
        prefix: &str,
        restarted: bool,
    ) {
        let (Some(before), Some(after)) = (before, after) else {
            if after.is_some() {
                self.note(format!("{node}: not reachable at the start; no deltas"));
            }
            return;
        };
        let counters = || after.iter().filter(|(m, _)| m.starts_with(prefix));
        // A restarted node counts from 0 again (its log replay included).
        let restarted = restarted
            || counters()
                .any(|(metric, value)| *value < before.get(metric).copied().unwrap_or(0.0));
        let mut moved = Vec::new();
        for (metric, value) in counters() {
            let old = if restarted {
                0.0
            } else {
                before.get(metric).copied().unwrap_or(0.0)
            };
            if *value > old {
                moved.push(format!(
                    "{} +{}",
                    metric.trim_start_matches("distsync_"),
                    value - old
                ));
            }
        }
        if restarted {
            self.note(format!(
                "{node}: restarted during the demo, counters since its restart (log replay \
                 included): {}",
                if moved.is_empty() {
                    "none moved".to_string()
                } else {
                    moved.join(", ")
                }
            ));
        } else if moved.is_empty() {
            self.note(format!("{node}: no counter moved"));
        } else {
            self.note(format!("{node}: {}", moved.join(", ")));
        }
    }

    async fn metrics_moved(&mut self, before: &Snapshot) {
        self.begin("The metrics that moved (GET /metrics at the start and now)")
            .await;
        let after = self.scrape_all().await;
        for (name, _) in self.all_nodes() {
            let restarted = self
                .crashed
                .iter()
                .any(|endpoint| name == format!("lock {endpoint}"));
            let prefix = if name.starts_with("lock ") {
                "distsync_"
            } else if name.starts_with("queue ") {
                "distsync_queue"
            } else {
                "distsync_cache"
            };
            self.print_deltas(
                &name,
                before.get(&name),
                after.get(&name),
                prefix,
                restarted,
            );
        }
    }
}

type Snapshot = BTreeMap<String, BTreeMap<String, f64>>;

/// Counters of a Prometheus/OpenMetrics text page, summed over their labels.
fn parse_counters(text: &str) -> BTreeMap<String, f64> {
    let mut counters = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let mut fields = line.split_whitespace();
        let (Some(series), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if !name.ends_with("_total") {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *counters.entry(name.to_owned()).or_insert(0.0) += value;
        }
    }
    counters
}

fn http_base(address: &str) -> String {
    let address = address.trim().trim_end_matches('/');
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

fn mode_name(mode: LockMode) -> &'static str {
    match mode {
        LockMode::Shared => "shared",
        LockMode::Exclusive => "exclusive",
    }
}

async fn release_all(guards: impl IntoIterator<Item = LockGuard>) -> anyhow::Result<()> {
    for guard in guards {
        guard.release().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_labels_and_other_series_ignored() {
        let text = "# TYPE distsync_queue_acked counter\n\
                    distsync_queue_acked_total 3\n\
                    distsync_cache_state_transitions_total{from=\"I\",to=\"M\"} 2\n\
                    distsync_cache_state_transitions_total{from=\"M\",to=\"S\"} 1\n\
                    distsync_raft_term 4\n\
                    distsync_lock_acquire_seconds_count 7\n\
                    # EOF\n";
        let counters = parse_counters(text);
        assert_eq!(counters.get("distsync_queue_acked_total"), Some(&3.0));
        assert_eq!(
            counters.get("distsync_cache_state_transitions_total"),
            Some(&3.0)
        );
        assert_eq!(counters.len(), 2, "{counters:?}");
    }
}
