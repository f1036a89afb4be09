//! A TCP fault proxy on 127.0.0.1, placed between the operator and the API server (or a
//! target) to inject network faults without touching the other tests' traffic:
//! - `Pass`: bytes flow both ways;
//! - `Freeze`: nothing flows, nothing is dropped (what a SIGSTOPped peer looks like): bytes
//!   wait in the socket buffers and flow again on `Pass`;
//! - `Cut`: every open connection is closed and new ones are closed at once (a dead peer).
//!
//! TLS passes through untouched, so a kubeconfig only needs its server address changed.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Freeze,
    Cut,
}

/// Stops with the test's runtime.
pub struct FaultProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl FaultProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = modes.subscribe();
                if *mode.borrow() == Mode::Cut {
                    continue; // dropped: closed at once
                }
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::select! {
                        () = pump(cr, sw, mode.clone()) => {}
                        () = pump(sr, cw, mode) => {}
                    }
                });
            }
        });
        Self { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Copies `from` to `to` while the mode allows; returns when either side closes or on `Cut`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !passing(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() { return; }
                continue;
            }
        };
        // A read that completed is forwarded once the mode allows again.
        if !passing(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits while frozen; `false` once cut (or the proxy is gone).
async fn passing(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        match m {
            Mode::Pass => return true,
            Mode::Cut => return false,
            Mode::Freeze => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}
