//! Opaque TCP relay for what is not parsed (TLS passed through, unknown protocols): connect to
//! the original destination and copy both ways until either side closes or the connection has
//! been idle for `timeouts.idle`.
use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncRead, AsyncWrite};

use super::upstream::{ConnectError, Dialer};

#[derive(Debug, thiserror::Error)]
pub enum SpliceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("relay: {0}")]
    Io(#[from] std::io::Error),
    #[error("idle for {0:?}, closed")]
    Idle(Duration),
}

/// Relays `client` to `dst` until done. `idle_of` reports how long the client side has been
/// quiet (its counters see both directions).
pub async fn relay<C>(
    mut client: C,
    dialer: &Dialer,
    dst: SocketAddr,
    idle: Duration,
    idle_of: impl Fn() -> Duration,
) -> Result<(), SpliceError>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = dialer.connect(dst).await?;
    relay_streams(&mut client, &mut upstream, idle, idle_of).await
}

pub async fn relay_streams<A, B>(
    a: &mut A,
    b: &mut B,
    idle: Duration,
    idle_of: impl Fn() -> Duration,
) -> Result<(), SpliceError>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copy);
    let check = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        tokio::select! {
            r = &mut copy => return r.map(|_| ()).map_err(SpliceError::from),
            _ = tokio::time::sleep(check) => {
                if idle_of() >= idle {
                    return Err(SpliceError::Idle(idle));
                }
            }
        }
    }
}
