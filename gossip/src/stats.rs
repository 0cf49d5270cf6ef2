//! Counters the node exports as metrics (`palisade_gossip_*`).

/// Counters of the dissemination engine. Every dropped input is counted by its reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EngineStats {
    /// Frames handed to the engine.
    pub messages_in: u64,
    /// Bytes of those frames.
    pub bytes_in: u64,
    /// Messages the engine asked to send.
    pub messages_out: u64,
    /// Own signals numbered, signed and spread.
    pub signals_published: u64,
    /// Own signals refused before signing (they would fail validation everywhere).
    pub local_invalid: u64,
    /// New signals from peers that verified and were kept.
    pub signals_accepted: u64,
    /// Of those, signals of other origins handed to the node.
    pub signals_delivered: u64,
    /// Signals sent by epidemic push.
    pub signals_pushed: u64,
    /// Signals sent to repair a peer's gaps.
    pub repair_signals_sent: u64,
    /// Digests sent (anti-entropy rounds and new peers).
    pub digests_sent: u64,
    /// Range requests sent.
    pub requests_sent: u64,
    /// Signals already held (normal with push gossip; not a fault).
    pub duplicates: u64,
    /// Signals whose signature did not verify.
    pub forged: u64,
    /// Validly signed signals reusing an id with other content (an origin signed twice).
    pub conflicting: u64,
    /// Frames that did not decode.
    pub malformed: u64,
    /// Frames over the size limit.
    pub oversized: u64,
    /// Digests or revocation lists of another fleet.
    pub wrong_fleet: u64,
    /// Signals hashed in an epoch this node does not accept.
    pub unknown_epoch: u64,
    /// Signals observed further in the future than the tolerated clock skew.
    pub clock_skew: u64,
    /// Signals whose origin is revoked.
    pub revoked_origin: u64,
    /// Out-of-order signals dropped because too many were waiting for a gap.
    pub pending_overflow: u64,
    /// Frames dropped unread because their sender was rate limited or banned.
    pub rate_limited: u64,
    /// Peers cut off for misbehaving.
    pub peers_disconnected: u64,
}
