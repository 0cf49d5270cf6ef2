//! The QUIC side of the tier: address validation, sensor sessions, reports and
//! subscriptions. One task per connection; everything stateful goes to the core.
//!
//! Per connection:
//! - the handshake authenticates the sensor by its ed25519 node key (TLS identity);
//!   unvalidated client addresses get a QUIC Retry first, so a spoofed source cannot
//!   make the tier do handshake work or send it anything;
//! - the first bidirectional stream is the session: `Hello` -> `Welcome`, then
//!   `Report` -> `Ack`, pipelined (several reports verified at once on blocking threads,
//!   acked in order once the core wrote them);
//! - a second bidirectional stream, opened by the sensor with `Subscribe`, carries the
//!   list deltas.
//!
//! Every read is bounded in size (frames over the envelope limit are never read) and in
//! time (handshake, hello, idle timeout), and every queue is bounded.

use palisade_consensus::{Asn, VerifiedAddress};
use palisade_gossip::net::{read_frame, write_frame, FrameError};
use palisade_proto::central::{
    CentralMessage, DeltaKind, ListDelta, Refusal, RefusalCode, RejectReason, MAX_DELTA_ENTRIES, MAX_TEXT,
};
use palisade_proto::envelope::MAX_MESSAGE_BYTES;
use palisade_proto::signal::Verifier;
use palisade_proto::{Epoch, Message, NodeId, NodeKey, SignedSignal, Timestamp};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::asn::AsnDb;
use super::limits::Guard;
use super::metrics::Counters;
use super::store::CentralStore;
use super::tier::{now, CatchUp, Checked, Command, Refused};

/// ALPN protocol of the sensor-to-tier protocol.
pub const ALPN: &[u8] = b"palisade-central/1";

/// Close codes.
pub mod close {
    /// Normal end.
    pub const DONE: u32 = 0;
    /// Refused (unknown token, not enrolled, banned, over the limit).
    pub const REFUSED: u32 = 1;
    /// Cut off for bad input.
    pub const MISBEHAVED: u32 = 2;
    /// Replaced by a newer session of the same sensor.
    pub const REPLACED: u32 = 3;
    /// The sensor's tenant was removed from the tier.
    pub const REMOVED: u32 = 4;
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Reports of one connection being verified or written at once.
const PIPELINE: usize = 4;
/// Tolerated clock skew of sensors.
const MAX_SKEW: Duration = Duration::from_secs(600);
/// Deltas read from the log per step of a catch-up.
const CATCH_UP_STEP: usize = 256;

/// What connection tasks share.
pub struct Ctx {
    /// Commands to the core.
    pub core: mpsc::Sender<Command>,
    /// The database (catch-ups read the delta log directly).
    pub store: Arc<CentralStore>,
    /// The IP-to-ASN database.
    pub asn: AsnDb,
    /// Rate limits and penalties.
    pub guard: Guard,
    /// Counters.
    pub counters: Arc<Counters>,
    /// The tier's key, to sign snapshot parts.
    pub key: NodeKey,
    /// Hashing epoch length, seconds.
    pub epoch_secs: u32,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Numbers connections.
    pub next_conn: AtomicU64,
    /// Bounds the signature checks running at once.
    pub verify_slots: Arc<Semaphore>,
    /// When the tier started (the guard's clock).
    pub started: Instant,
}

impl Ctx {
    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The ASN and /24 of a connection's source address. Addresses the database does not
/// know count as AS 0: one group together, so they add no diversity.
pub fn verified_address(asn: &AsnDb, ip: IpAddr) -> VerifiedAddress {
    let ip = palisade_proto::ip::canonical_ip(ip);
    let net24 = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [o[0], o[1], o[2]]
        }
        IpAddr::V6(v6) => {
            let hash = blake3::hash(&v6.octets()[..6]);
            let b = hash.as_bytes();
            [b[0], b[1], b[2]]
        }
    };
    VerifiedAddress { asn: asn.lookup(ip).unwrap_or(Asn(0)), net24 }
}

/// Accepts connections until the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<Ctx>) {
    while let Some(incoming) = endpoint.accept().await {
        if !incoming.remote_address_validated() {
            ctx.counters.retry();
            let _ = incoming.retry();
            continue;
        }
        if ctx.open.load(Ordering::Relaxed) >= ctx.max_connections {
            ctx.counters.connection(false);
            incoming.refuse();
            continue;
        }
        ctx.open.fetch_add(1, Ordering::Relaxed);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            connection(incoming, &ctx).await;
            ctx.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

fn encode(message: CentralMessage) -> Option<Vec<u8>> {
    Message::Central(message).encode().ok()
}

async fn send_message(send: &mut SendStream, message: CentralMessage) -> bool {
    match encode(message) {
        Some(bytes) => write_frame(send, &bytes).await.is_ok(),
        None => false,
    }
}

async fn refuse(send: &mut SendStream, code: RefusalCode, reason: &str) {
    let reason = palisade_proto::central::truncate_text(reason, MAX_TEXT);
    let _ = send_message(send, CentralMessage::Refused(Refusal { code, reason })).await;
    let _ = send.finish();
    // Let the refusal reach the sensor before the connection closes.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

fn decode(bytes: &[u8]) -> Option<CentralMessage> {
    match Message::decode(bytes) {
        Ok(Message::Central(m)) => Some(m),
        _ => None,
    }
}

async fn connection(incoming: quinn::Incoming, ctx: &Arc<Ctx>) {
    let remote = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            _ => {
                ctx.counters.connection(false);
                return;
            }
        },
        Err(_) => {
            ctx.counters.connection(false);
            return;
        }
    };
    let Some(sensor) = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
        .and_then(|certs| certs.first().and_then(palisade_gossip::tls::node_id_of))
    else {
        ctx.counters.connection(false);
        conn.close(VarInt::from_u32(close::REFUSED), b"no node certificate");
        return;
    };
    if let Some(left) = ctx.guard.banned(&sensor, ctx.elapsed()) {
        ctx.counters.connection(false);
        let reason = format!("cut off for bad input for {} s more", left.as_secs());
        conn.close(VarInt::from_u32(close::REFUSED), reason.as_bytes());
        return;
    }
    ctx.counters.connection(true);
    let address = verified_address(&ctx.asn, remote.ip());
    let conn_id = ctx.next_conn.fetch_add(1, Ordering::Relaxed);
    match session(&conn, sensor, remote, address, conn_id, ctx).await {
        Ok(()) => conn.close(VarInt::from_u32(close::DONE), b"bye"),
        Err((code, reason)) => {
            tracing::debug!(sensor = %sensor.short(), remote = %remote, reason = %reason, "session ended");
            conn.close(VarInt::from_u32(code), reason.as_bytes());
        }
    }
    let _ = ctx.core.send(Command::Gone { sensor, conn_id }).await;
}

type SessionEnd = (u32, String);

async fn session(
    conn: &Connection,
    sensor: NodeId,
    remote: SocketAddr,
    address: VerifiedAddress,
    conn_id: u64,
    ctx: &Arc<Ctx>,
) -> Result<(), SessionEnd> {
    let (mut send, mut recv) = tokio::time::timeout(HELLO_TIMEOUT, conn.accept_bi())
        .await
        .map_err(|_| (close::REFUSED, "no session stream in time".to_owned()))?
        .map_err(|e| (close::DONE, e.to_string()))?;
    let bytes = tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, MAX_MESSAGE_BYTES as u32))
        .await
        .map_err(|_| (close::REFUSED, "no hello in time".to_owned()))?
        .map_err(|_| (close::REFUSED, "hello unreadable".to_owned()))?;
    let Some(CentralMessage::Hello(hello)) = decode(&bytes) else {
        // No strike: the key is not admitted yet, and keys cost nothing to make, so
        // remembering it would only let strangers grow the guard's table.
        ctx.counters.malformed();
        refuse(&mut send, RefusalCode::Protocol, "the first frame must be a hello").await;
        return Err((close::MISBEHAVED, "no hello".into()));
    };
    if hello.enroll.is_some() && !ctx.guard.may_enroll(remote.ip(), ctx.elapsed()) {
        ctx.counters.refused(false);
        refuse(&mut send, RefusalCode::Busy, "too many failed enrollments from this address; wait a minute")
            .await;
        return Err((close::REFUSED, "enrollment rate".into()));
    }
    let (kick, mut kicked) = oneshot::channel();
    let (reply, answer) = oneshot::channel();
    let admit = Command::Admit { sensor, enroll: hello.enroll, remote, address, conn_id, kick, reply };
    ctx.core.send(admit).await.map_err(|_| (close::REFUSED, "stopping".to_owned()))?;
    let welcome = match answer.await {
        Ok(Ok(welcome)) => welcome,
        Ok(Err(Refused { code, reason })) => {
            let unknown = code == RefusalCode::UnknownToken;
            if unknown {
                ctx.guard.enroll_failed(remote.ip(), ctx.elapsed());
            }
            ctx.counters.refused(unknown);
            tracing::info!(sensor = %sensor.short(), remote = %remote, reason = %reason, "session refused");
            refuse(&mut send, code, &reason).await;
            return Err((close::REFUSED, "refused".into()));
        }
        Err(_) => return Err((close::REFUSED, "stopping".into())),
    };
    let community = welcome.community;
    let asn_name = ctx.asn.name(address.asn, Some(remote.ip())).unwrap_or_default();
    tracing::debug!(sensor = %sensor.short(), remote = %remote, tenant = %welcome.tenant, asn = address.asn.0, asn_name = %asn_name, "session open");
    if !send_message(&mut send, CentralMessage::Welcome(welcome)).await {
        return Err((close::DONE, "welcome not sent".into()));
    }
    let subscription = tokio::spawn(subscription(conn.clone(), sensor, community, ctx.clone()));
    let result = reports(conn, sensor, address, send, recv, &mut kicked, ctx).await;
    subscription.abort();
    result
}

/// The session's report loop: read, check, verify (pipelined), hand to the core, ack.
async fn reports(
    conn: &Connection,
    sensor: NodeId,
    address: VerifiedAddress,
    mut send: SendStream,
    mut recv: RecvStream,
    kicked: &mut oneshot::Receiver<(u32, &'static str)>,
    ctx: &Arc<Ctx>,
) -> Result<(), SessionEnd> {
    type Job = tokio::task::JoinHandle<(u64, Vec<Checked>)>;
    let (jobs, mut pending) = mpsc::channel::<Job>(PIPELINE);
    let core = ctx.core.clone();
    let acker = tokio::spawn(async move {
        while let Some(job) = pending.recv().await {
            let Ok((batch, signals)) = job.await else { break };
            let (reply, ack) = oneshot::channel();
            if core.send(Command::Report { sensor, address, batch, signals, reply }).await.is_err() {
                break;
            }
            let Ok(ack) = ack.await else { break };
            if !send_message(&mut send, CentralMessage::Ack(ack)).await {
                break;
            }
        }
    });
    let outcome = loop {
        let frame = tokio::select! {
            why = &mut *kicked => {
                let (code, reason) = why.unwrap_or((close::REPLACED, "replaced by a newer session"));
                break Err((code, reason.to_owned()));
            }
            frame = read_frame(&mut recv, MAX_MESSAGE_BYTES as u32) => frame,
        };
        let bytes = match frame {
            Ok(bytes) => bytes,
            Err(FrameError::Closed) => break Ok(()),
            Err(FrameError::Oversized(len)) => {
                ctx.counters.malformed();
                let banned = ctx.guard.strike(sensor, 1, ctx.elapsed());
                ctx.counters.strike(1, banned);
                break Err((close::MISBEHAVED, format!("frame of {len} bytes over the limit")));
            }
        };
        let report = match decode(&bytes) {
            Some(CentralMessage::Report(report)) => report,
            _ => {
                ctx.counters.malformed();
                let banned = ctx.guard.strike(sensor, 1, ctx.elapsed());
                ctx.counters.strike(1, banned);
                break Err((close::MISBEHAVED, "malformed frame or a frame other than a report".to_owned()));
            }
        };
        let n = report.signals.len();
        ctx.counters.received(n);
        let wait = ctx.guard.throttle(sensor, n, ctx.elapsed());
        if !wait.is_zero() {
            ctx.counters.throttled(wait);
            tokio::time::sleep(wait).await;
        }
        let now = now();
        let mut checked: Vec<Checked> = report
            .signals
            .into_iter()
            .map(|s| {
                let r = precheck(&s, &sensor, ctx.epoch_secs, now);
                (s, r)
            })
            .collect();
        let Ok(permit) = ctx.verify_slots.clone().acquire_owned().await else {
            break Err((close::DONE, "stopping".to_owned()));
        };
        let batch = report.batch;
        let (guard_ctx, conn) = (ctx.clone(), conn.clone());
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let unchecked: Vec<usize> = (0..checked.len()).filter(|i| checked[*i].1.is_none()).collect();
            let results = Verifier::default().verify_all(unchecked.iter().map(|i| &checked[*i].0));
            for (i, result) in unchecked.into_iter().zip(results) {
                if let (Err(_), Some(slot)) = (result, checked.get_mut(i)) {
                    slot.1 = Some(RejectReason::Forged);
                }
            }
            let bad = checked.iter().filter(|(_, r)| r.is_some_and(RejectReason::is_misbehaviour)).count();
            if bad > 0 {
                let strikes = u32::try_from(bad).unwrap_or(u32::MAX);
                let banned = guard_ctx.guard.strike(sensor, strikes, guard_ctx.elapsed());
                guard_ctx.counters.strike(u64::from(strikes), banned);
                if banned {
                    tracing::warn!(sensor = %sensor.short(), bad, "sensor cut off for bad signals");
                    conn.close(VarInt::from_u32(close::MISBEHAVED), b"too many bad signals");
                }
            }
            (batch, checked)
        });
        if jobs.send(job).await.is_err() {
            break Ok(());
        }
    };
    drop(jobs);
    // Let the acks of what was read go out (a replaced or closing session still gets
    // the acks of the reports the core took in).
    let _ = tokio::time::timeout(Duration::from_secs(5), acker).await;
    outcome
}

/// The checks that need no signature and no state.
fn precheck(s: &SignedSignal, sensor: &NodeId, epoch_secs: u32, now: Timestamp) -> Option<RejectReason> {
    let signal = &s.signal;
    if signal.origin != *sensor {
        return Some(RejectReason::ForeignOrigin);
    }
    if signal.sealed_ip.is_some() {
        return Some(RejectReason::SealedIp);
    }
    if signal.validate().is_err() {
        return Some(RejectReason::Invalid);
    }
    if signal.observed_at > now.saturating_add(MAX_SKEW) {
        return Some(RejectReason::Future);
    }
    let newest = Epoch::containing(now.saturating_add(MAX_SKEW), epoch_secs);
    let oldest = Epoch::containing(now.saturating_sub(MAX_SKEW), epoch_secs);
    if signal.epoch > newest || signal.epoch.0.saturating_add(1) < oldest.0 {
        return Some(RejectReason::WrongEpoch);
    }
    None
}

/// The subscription stream: catch up, then live deltas.
async fn subscription(conn: Connection, sensor: NodeId, community: bool, ctx: Arc<Ctx>) {
    let Ok((mut send, mut recv)) = conn.accept_bi().await else { return };
    let from =
        match tokio::time::timeout(HELLO_TIMEOUT, read_frame(&mut recv, MAX_MESSAGE_BYTES as u32)).await {
            Ok(Ok(bytes)) => match decode(&bytes) {
                Some(CentralMessage::Subscribe(s)) => s.from_version,
                _ => {
                    ctx.counters.malformed();
                    refuse(
                        &mut send,
                        RefusalCode::Protocol,
                        "the first frame of a stream after the session must be subscribe",
                    )
                    .await;
                    return;
                }
            },
            _ => return,
        };
    if !community {
        refuse(&mut send, RefusalCode::NotCommunity, "this tenant did not opt in to the community list")
            .await;
        return;
    }
    let (reply, answer) = oneshot::channel();
    if ctx.core.send(Command::Subscribe { sensor, from, reply }).await.is_err() {
        return;
    }
    let sub = match answer.await {
        Ok(Ok(sub)) => sub,
        Ok(Err(Refused { code, reason })) => {
            refuse(&mut send, code, &reason).await;
            return;
        }
        Err(_) => return,
    };
    let mut last = match catch_up(&mut send, sub.catch_up, from, &ctx).await {
        Some(version) => version,
        None => {
            let _ = send.reset(VarInt::from_u32(close::DONE));
            return;
        }
    };
    let mut live = sub.live;
    while let Some(published) = live.recv().await {
        if published.version <= last {
            continue;
        }
        if write_frame(&mut send, &published.bytes).await.is_err() {
            return;
        }
        ctx.counters.delta_sent(published.entries);
        last = published.version;
    }
    // The core dropped this subscriber (too slow): end the stream, the sensor resumes.
    let _ = send.finish();
}

/// Sends the catch-up; returns the version the subscriber then holds, `None` when the
/// log no longer holds what was needed (the sensor resubscribes and gets a snapshot).
async fn catch_up(send: &mut SendStream, catch_up: CatchUp, from: u64, ctx: &Ctx) -> Option<u64> {
    match catch_up {
        CatchUp::UpToDate => Some(from),
        CatchUp::Log { from, to } => {
            let mut next = from;
            while next <= to {
                let store = ctx.store.clone();
                let deltas = tokio::task::spawn_blocking(move || store.deltas_from(next, CATCH_UP_STEP))
                    .await
                    .ok()?
                    .ok()?;
                if deltas.first().map(|d| d.delta.version) != Some(next) {
                    return None;
                }
                for d in deltas.into_iter().take_while(|d| d.delta.version <= to) {
                    let entries = d.delta.added.len() + d.delta.removed.len();
                    let version = d.delta.version;
                    if version != next {
                        return None;
                    }
                    write_frame(send, &encode(CentralMessage::Delta(d))?).await.ok()?;
                    ctx.counters.delta_sent(entries);
                    next = version + 1;
                }
            }
            Some(to)
        }
        CatchUp::Snapshot { version, entries } => {
            let parts = entries.len().div_ceil(MAX_DELTA_ENTRIES).max(1);
            let parts32 = u32::try_from(parts).ok()?;
            let issued_at = now();
            let mut chunks = entries.chunks(MAX_DELTA_ENTRIES);
            for part in 0..parts32 {
                let added = chunks.next().map(<[_]>::to_vec).unwrap_or_default();
                let n = added.len();
                let delta = ListDelta {
                    version,
                    kind: DeltaKind::Snapshot { part, parts: parts32 },
                    issued_at,
                    added,
                    removed: Vec::new(),
                };
                let bytes = encode(CentralMessage::Delta(delta.sign(&ctx.key)))?;
                write_frame(send, &bytes).await.ok()?;
                ctx.counters.delta_sent(n);
            }
            Some(version)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on what they did not expect
mod tests {
    use super::*;
    use palisade_proto::{HashedIp, Signal};

    fn signal(key: &NodeKey, epoch: u32, at: Timestamp) -> SignedSignal {
        Signal {
            origin: key.node_id(),
            seq: 1,
            epoch: Epoch(epoch),
            hashed_ip: HashedIp([1; 32]),
            scenario: "palisade/ssh-bf".into(),
            confidence: 2,
            observed_at: at,
            events_count: 3,
            sealed_ip: None,
        }
        .sign(key)
    }

    #[test]
    fn prechecks_refuse_foreign_sealed_future_and_old_epochs() {
        let key = NodeKey::from_bytes(&[1; 32]);
        let other = NodeKey::from_bytes(&[2; 32]);
        // Mid-epoch 10: with 10 minutes of tolerated skew, epochs 9 and 10 are accepted.
        let now = Timestamp::from_secs(10 * 3600 + 1800);
        let period = 3600;
        let ok = signal(&key, 10, now);
        assert_eq!(precheck(&ok, &key.node_id(), period, now), None);
        assert_eq!(precheck(&signal(&key, 9, now), &key.node_id(), period, now), None, "previous epoch");
        assert_eq!(precheck(&ok, &other.node_id(), period, now), Some(RejectReason::ForeignOrigin));
        assert_eq!(
            precheck(&signal(&key, 8, now), &key.node_id(), period, now),
            Some(RejectReason::WrongEpoch)
        );
        assert_eq!(
            precheck(&signal(&key, 11, now), &key.node_id(), period, now),
            Some(RejectReason::WrongEpoch)
        );
        let future = signal(&key, 10, Timestamp::from_secs(10 * 3600 + 1800 + 3600));
        assert_eq!(precheck(&future, &key.node_id(), period, now), Some(RejectReason::Future));
        let mut sealed = ok.clone();
        sealed.signal.sealed_ip = Some(palisade_proto::SealedIp { nonce: [0; 24], ciphertext: [0; 33] });
        assert_eq!(precheck(&sealed, &key.node_id(), period, now), Some(RejectReason::SealedIp));
        let mut bad = ok;
        bad.signal.seq = 0;
        assert_eq!(precheck(&bad, &key.node_id(), period, now), Some(RejectReason::Invalid));
    }

    #[test]
    fn unknown_sources_share_as_zero_and_v6_folds_its_48() {
        let db = AsnDb::parse_tsv("127.0.0.2\t127.0.0.2\t64502\tZZ\tx\n", "t").unwrap();
        let a = verified_address(&db, "127.0.0.2".parse().unwrap());
        assert_eq!((a.asn, a.net24), (Asn(64502), [127, 0, 0]));
        assert_eq!(verified_address(&db, "::ffff:127.0.0.2".parse().unwrap()), a);
        assert_eq!(verified_address(&db, "198.51.100.7".parse().unwrap()).asn, Asn(0));
        let x = verified_address(&db, "2001:db8:1::1".parse().unwrap());
        let y = verified_address(&db, "2001:db8:1:ffff::9".parse().unwrap());
        let z = verified_address(&db, "2001:db8:2::1".parse().unwrap());
        assert_eq!(x.net24, y.net24);
        assert_ne!(x.net24, z.net24);
    }
}
