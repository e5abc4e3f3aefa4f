//! A TCP proxy between two processes of a test, which the test can break the way networks break:
//! `Cut` refuses new connections and resets established ones (a peer that is gone), `Blackhole`
//! accepts and holds connections but forwards nothing (a peer that is unreachable: packets vanish,
//! so only the caller's own timeout ends the wait). Shared by the black-box test targets.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How a [`Link`] treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// Bytes flow both ways.
    Open,
    /// New connections are closed at once; established ones are dropped.
    Cut,
    /// Connections are held open and nothing is forwarded, until the state changes (then they
    /// are dropped: the bytes "in flight" were lost).
    Blackhole,
}

/// A directed link `client → target` through a loopback proxy.
pub struct Link {
    /// The proxy's address: dial this instead of the target.
    pub addr: String,
    state: watch::Sender<LinkState>,
    /// Connections currently forwarding bytes; a cut or blackhole is in force once this is zero.
    forwarding: Arc<AtomicUsize>,
}

impl Link {
    /// Starts a proxy to `target` in state `Open`.
    pub async fn start(target: String) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let (state, watched) = watch::channel(LinkState::Open);
        let forwarding = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&forwarding);
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                let watched = watched.clone();
                let counter = Arc::clone(&counter);
                let target = target.clone();
                tokio::spawn(serve_connection(inbound, target, watched, counter));
            }
        });
        Link {
            addr,
            state,
            forwarding,
        }
    }

    /// Puts the link in `state`; returns once no connection forwards bytes against it.
    pub async fn set(&self, state: LinkState) {
        self.state.send_replace(state);
        if state != LinkState::Open {
            while self.forwarding.load(Ordering::SeqCst) > 0 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Cuts (`true`) or heals (`false`) the link.
    pub async fn set_cut(&self, cut: bool) {
        self.set(if cut { LinkState::Cut } else { LinkState::Open })
            .await;
    }
}

async fn serve_connection(
    mut inbound: TcpStream,
    target: String,
    mut watched: watch::Receiver<LinkState>,
    forwarding: Arc<AtomicUsize>,
) {
    if *watched.borrow_and_update() == LinkState::Open {
        forwarding.fetch_add(1, Ordering::SeqCst);
        let broken = match TcpStream::connect(&target).await {
            Ok(mut outbound) => {
                let pipe = tokio::io::copy_bidirectional(&mut inbound, &mut outbound);
                tokio::select! {
                    _ = pipe => false,
                    _ = watched.wait_for(|s| *s != LinkState::Open) => true,
                }
            }
            Err(_) => false,
        };
        forwarding.fetch_sub(1, Ordering::SeqCst);
        if !broken {
            return;
        }
    }
    // The link is broken (before or during this connection): the target side, if any, is
    // dropped; the client side is closed for Cut, held silent for Blackhole.
    if *watched.borrow() == LinkState::Blackhole {
        let _ = watched.wait_for(|s| *s != LinkState::Blackhole).await;
    } else {
        let _ = inbound.shutdown().await;
    }
}
