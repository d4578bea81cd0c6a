//! The cluster edge: several hosts, each with its own vigil, agreeing through one PostgreSQL
//! on which node runs each exclusive agent.
//!
//! One task, on the I/O runtime, never on the loop: every renewal period it runs one round
//! ([`leases::round`]: this node is alive, its leases renewed, the others read) and reports to
//! the core as [`vigil_core::Event::Lease`]s. The core decides what runs; this task only says
//! what the database said. A round that fails says nothing: the core's own timer fences what
//! runs before the last lease it heard of can lapse.

mod commands;
mod decide;
mod fence_file;
pub mod fleet_view;
mod identity;
pub mod leases;
mod mirror;
mod publish;
mod schema;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vigil_core::{Event, LeaseNews};

use crate::config::{AgentConfig, ClusterConfig, Placement};
pub use commands::CHANNEL as COMMANDS_CHANNEL;
use decide::Verdict;
use fence_file::{FenceFiles, FenceWrite};
pub use fence_file::{fence_env, remembered};
pub use leases::Candidate;
pub use mirror::MirrorHealth;

/// What the loop's side asks of the cluster task.
pub enum ToCluster {
    /// The exclusive agents, after a reload.
    Candidates(Vec<Candidate>),
    /// Give up a lease (the core decided: nothing of the agent runs here any more).
    Release {
        agent: String,
        epoch: u64,
        to: Option<String>,
    },
}

/// The loop's handle on the cluster task.
#[derive(Clone)]
pub struct Cluster {
    tx: mpsc::UnboundedSender<ToCluster>,
    /// The last round reached the database.
    pub up: Arc<AtomicBool>,
    pub node: String,
    /// Wakes the journal's mirror.
    mirror: Arc<tokio::sync::Notify>,
}

impl Cluster {
    pub fn send(&self, msg: ToCluster) {
        let _ = self.tx.send(msg);
    }

    /// The loop wrote to the journal: the mirror copies it (a permit is kept when the mirror
    /// is busy, so no write goes unseen).
    pub fn journal_written(&self) {
        self.mirror.notify_one();
    }
}

/// The exclusive agents of `agents`, as candidates for this node, with the ids `id_of` gives.
pub fn candidates<'a>(
    node: &str,
    agents: impl Iterator<Item = &'a AgentConfig>,
    id_of: impl Fn(&str) -> Option<vigil_core::AgentId>,
) -> Vec<Candidate> {
    agents
        .filter_map(|a| {
            let Placement::Exclusive { nodes, keep } = &a.placement else {
                return None;
            };
            let admitted = a.placement.admits(node);
            let better = match nodes.iter().position(|n| n == node) {
                Some(rank) => nodes[..rank].to_vec(),
                None if admitted => Vec::new(),
                None => nodes.clone(),
            };
            Some(Candidate {
                agent: id_of(&a.name)?,
                name: a.name.clone(),
                definition: a.definition_hash(),
                better,
                admitted,
                fence_lead: a.stop_timeout + keep.margin,
            })
        })
        .collect()
}

/// How the cluster's tasks reach the rest of vigil.
pub struct Links<'a> {
    /// Lease news, to the loop.
    pub events: mpsc::UnboundedSender<Event>,
    /// Where the cluster's health shows (`vigil_cluster_up`, the mirror's lag).
    pub health: &'a crate::health::Health,
    /// The loop's pictures of the fleet, to publish (none without an API).
    pub view: Option<tokio::sync::watch::Receiver<Arc<crate::view::FleetView>>>,
    /// Where commands from other hosts go, as a person's (none without an API).
    pub commands: Option<mpsc::Sender<crate::api::ApiRequest>>,
}

/// Opens the pool (lazily: a database down at start is a round that fails, not a vigil that
/// does not start) and starts the tasks: renewals, the journal's mirror, commands.
pub fn start(
    config: &ClusterConfig,
    state_dir: &Path,
    candidates: Vec<Candidate>,
    links: Links<'_>,
    io: &tokio::runtime::Handle,
) -> Result<Cluster, sqlx::Error> {
    let Links {
        events,
        health,
        view,
        commands,
    } = links;
    let renew = config.renew_every();
    let options: PgConnectOptions = config.url.parse()?;
    // A round must fail fast enough for the next to be tried before the fence: connecting,
    // waiting for a connection and each statement are all bounded by half a period.
    let half = renew / 2;
    let options = options.options([
        ("statement_timeout", half.as_millis().to_string()),
        // "relation already exists, skipping" and the like are not news.
        ("client_min_messages", "warning".to_string()),
    ]);
    let pool = {
        let _guard = io.enter();
        PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(half)
            .idle_timeout(Some(Duration::from_secs(60)))
            .connect_lazy_with(options)
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let up = health.cluster_up.clone();
    let instance = identity::load_or_create(state_dir).map_err(sqlx::Error::Io)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    // The mirror's and the commands' connections: a long copy never holds up a renewal.
    let mirror_pool = {
        let _guard = io.enter();
        PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(config.url.parse::<PgConnectOptions>()?.options([
                ("client_min_messages", "warning"),
                // A connection that went dark fails a statement, not the mirror.
                ("statement_timeout", "30000"),
            ]))
    };
    let mirror = mirror::Mirror {
        pool: mirror_pool.clone(),
        node: config.node.clone(),
        journal: state_dir.join("audit.jsonl"),
        wake: wake.clone(),
        health: health.mirror.clone(),
    };
    io.spawn(mirror.run());
    if let Some(view) = view.clone() {
        io.spawn(publish::Publisher::new(mirror_pool.clone(), config.node.clone(), view).run());
    }
    if let Some(loop_requests) = commands {
        let commands = commands::Commands {
            pool: mirror_pool.clone(),
            node: config.node.clone(),
            loop_requests,
        };
        io.spawn(commands.run());
    }
    let task = Task {
        pool,
        node: config.node.clone(),
        instance,
        ttl: config.lease_ttl,
        renew,
        candidates,
        events,
        sent: HashMap::new(),
        files: Arc::new(FenceFiles::new(state_dir)),
        up: up.clone(),
        schema_ready: false,
        failing_since: None,
        view: view.clone(),
    };
    io.spawn(task.run(rx));
    info!(
        "cluster: node {} (lease_ttl {}, renewals every {})",
        config.node,
        vigil_core::human_duration(config.lease_ttl),
        vigil_core::human_duration(renew)
    );
    Ok(Cluster {
        tx,
        up,
        node: config.node.clone(),
        mirror: wake,
    })
}

/// What was last told to the core about an agent, so only changes are sent again (a renewal
/// always is: it moves the lease's end).
#[derive(PartialEq)]
enum Told {
    Held(u64),
    Elsewhere(String, u64),
    Refused(String),
    Moving(String),
}

struct Task {
    pool: PgPool,
    node: String,
    /// Which vigil this node is (see `identity`).
    instance: String,
    ttl: Duration,
    renew: Duration,
    candidates: Vec<Candidate>,
    events: mpsc::UnboundedSender<Event>,
    sent: HashMap<String, Told>,
    files: Arc<FenceFiles>,
    up: Arc<AtomicBool>,
    schema_ready: bool,
    /// The database has not answered since then.
    failing_since: Option<Instant>,
    /// The loop's pictures of the fleet (none without an API).
    view: Option<tokio::sync::watch::Receiver<Arc<crate::view::FleetView>>>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ToCluster>) {
        loop {
            let began = tokio::time::Instant::now();
            let next = match tokio::time::timeout(self.renew, self.round()).await {
                Ok(Ok(next)) => {
                    self.answered();
                    next
                }
                Ok(Err(e)) => self.failed(&e.to_string()),
                Err(_) => self.failed("no answer within a renewal period"),
            };
            // Rounds keep their pace from when each began, however long one took: the fence
            // budget counts on a renewal leaving every period.
            let wake = tokio::time::sleep_until(began + next);
            tokio::pin!(wake);
            loop {
                tokio::select! {
                    biased;
                    _ = &mut wake => break,
                    msg = rx.recv() => match msg {
                        None => return,
                        Some(ToCluster::Candidates(c)) => {
                            self.candidates = c;
                            break;
                        }
                        Some(ToCluster::Release { agent, epoch, to }) => {
                            self.release(&agent, epoch, to.as_deref()).await;
                        }
                    },
                }
            }
        }
    }

    fn answered(&mut self) {
        if let Some(since) = self.failing_since.take() {
            info!(
                "cluster: the database answers again (after {})",
                vigil_core::human_duration(since.elapsed())
            );
        }
        self.up.store(true, Ordering::Relaxed);
    }

    /// A failed round: tried again soon (the fence is a renewal period and more away).
    fn failed(&mut self, why: &str) -> Duration {
        self.up.store(false, Ordering::Relaxed);
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            warn!(
                "cluster: no renewal ({why}); exclusive agents are stopped before their leases can lapse"
            );
        }
        (self.renew / 3).max(Duration::from_millis(200))
    }

    async fn round(&mut self) -> Result<Duration, leases::RoundError> {
        if !self.schema_ready {
            schema::create(&self.pool).await?;
            self.schema_ready = true;
        }
        let sent_at = Instant::now();
        let rows = leases::round(
            &self.pool,
            &self.node,
            &self.instance,
            self.ttl,
            &self.candidates,
        )
        .await?;
        let decisions = decide::decide(&self.node, self.renew, &self.candidates, &rows);
        let mut take = Vec::new();
        let mut news = Vec::new();
        for (cand, verdict) in self.candidates.iter().zip(decisions.verdicts) {
            match verdict {
                Verdict::Take => take.push((cand.name.clone(), cand.definition.clone())),
                v => news.push((cand.clone(), v, sent_at)),
            }
        }
        let mut next = decisions.next;
        // What the round said is told before anything else is tried: a failure of what follows
        // never costs the renewals it made.
        self.tell(news).await;
        let take: Vec<(String, String)> = take
            .into_iter()
            .filter(|(name, _)| self.willing(name))
            .collect();
        if !take.is_empty() {
            let sent_at = Instant::now();
            let taken = match leases::acquire(&self.pool, &self.node, self.ttl, &take).await {
                Ok(taken) => taken,
                Err(e) => {
                    tracing::debug!("cluster: cannot take free leases now ({e})");
                    return Ok(next.min(self.renew / 3));
                }
            };
            let mut news = Vec::new();
            for (name, _) in &take {
                let Some(cand) = self.candidates.iter().find(|c| &c.name == name) else {
                    continue;
                };
                let verdict = match taken.iter().find(|(n, _)| n == name) {
                    Some((_, epoch)) => Verdict::Held {
                        epoch: *epoch as u64,
                        move_to: None,
                    },
                    // Another node was faster: the next round says which.
                    None => {
                        next = next.min(Duration::from_millis(100));
                        Verdict::Refused("another node took it first".into())
                    }
                };
                news.push((cand.clone(), verdict, sent_at));
            }
            self.tell(news).await;
        }
        Ok(next)
    }

    /// This node would run the agent if it held its lease: not stopped by a person here, not
    /// quarantined here (as the loop's latest picture says; without an API, it is assumed).
    /// A lease taken for an agent that stays down would keep every other node from it.
    fn willing(&self, agent: &str) -> bool {
        let Some(view) = &self.view else {
            return true;
        };
        let picture = view.borrow();
        picture
            .agent(agent)
            .is_none_or(|a| !a.held && a.state != vigil_core::AgentState::Quarantined)
    }

    /// Report the verdicts to the agents' files, then to the core: a run started under a
    /// lease finds its file already there. Files are written by this task alone, one round
    /// after another, so an older round's write never lands after a newer one's.
    async fn tell(&mut self, news: Vec<(Candidate, Verdict, Instant)>) {
        let mut writes = Vec::new();
        let mut events = Vec::new();
        for (cand, verdict, sent_at) in news {
            let (told, event) = match verdict {
                Verdict::Held { epoch, move_to } => {
                    // The lease counts from before the request was sent: this node's view
                    // of its end errs early, never late.
                    let valid_until = sent_at + self.ttl;
                    writes.push(FenceWrite::Valid {
                        agent: cand.name.clone(),
                        epoch,
                        until: valid_until.checked_sub(cand.fence_lead).unwrap_or(sent_at),
                    });
                    events.push(Event::Lease {
                        agent: cand.agent,
                        news: LeaseNews::Held { epoch, valid_until },
                    });
                    match move_to {
                        Some(to) => (Told::Moving(to.clone()), Some(LeaseNews::Move { to })),
                        None => (Told::Held(epoch), None),
                    }
                }
                Verdict::Elsewhere { holder, epoch } => (
                    Told::Elsewhere(holder.clone(), epoch),
                    Some(LeaseNews::Elsewhere { holder, epoch }),
                ),
                Verdict::Refused(why) => {
                    (Told::Refused(why.clone()), Some(LeaseNews::Refused { why }))
                }
                Verdict::Take => continue,
            };
            if !matches!(told, Told::Held(_) | Told::Moving(_)) {
                writes.push(FenceWrite::Lapsed {
                    agent: cand.name.clone(),
                });
            }
            let changed = self.sent.get(&cand.name) != Some(&told);
            // A move is said at every round until the holder gives the lease up (it may be
            // stopping, or stopped by a person, when it first hears of it).
            if let Some(news) = event
                && (changed || matches!(told, Told::Moving(_)))
            {
                events.push(Event::Lease {
                    agent: cand.agent,
                    news,
                });
            }
            self.sent.insert(cand.name.clone(), told);
        }
        let files = self.files.clone();
        let _ = tokio::task::spawn_blocking(move || files.apply(writes)).await;
        for event in events {
            let _ = self.events.send(event);
        }
    }

    async fn release(&mut self, agent: &str, epoch: u64, to: Option<&str>) {
        let result = leases::release(&self.pool, &self.node, agent, epoch, to).await;
        self.sent.remove(agent);
        let files = self.files.clone();
        let gone = vec![FenceWrite::Lapsed {
            agent: agent.to_string(),
        }];
        let _ = tokio::task::spawn_blocking(move || files.apply(gone)).await;
        match result {
            Ok(true) => info!("cluster: gave up the lease of {agent} (epoch {epoch})"),
            Ok(false) => {}
            // Not given up: it lapses by itself within a lease's time, and no node runs it
            // meanwhile (the safe side of a failed release).
            Err(e) => {
                warn!("cluster: cannot give up the lease of {agent} ({e}); it lapses by itself")
            }
        }
    }
}
