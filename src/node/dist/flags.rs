//! Distribution capability flags: what this node offers in the handshake and
//! what it demands of a peer.
//!
//! The values are the ones in OTP's `kernel/include/dist.hrl` and erts
//! `dist.h`, not the ones in `erl_dist::DistributionFlags` where they differ:
//! `erl_dist` 0.8 puts `MANDATORY_25_DIGEST` at bit 36 (following the
//! protocol document), while OTP 25's own `dist.hrl` and the flags a real OTP
//! 25 node offers (`erts_internal:get_dflags()` default `0xd07df7fbc`) use
//! bit 26, `0x0400_0000`. A test against a real `erl` (`tests/node_handshake.rs`)
//! shows that an OTP 25 node accepts a peer offering only bit 26 in place of
//! the eleven explicit flags, and refuses one offering bit 36 instead. We offer
//! bit 26 *and* the eleven explicit flags, and never bit 36.

/// Node is published (visible): appears in `nodes()` of its peers.
pub const PUBLISHED: u64 = 0x01;
/// Extended (3 × 32 bit) references.
pub const EXTENDED_REFERENCES: u64 = 0x04;
/// Distributed process monitoring (MONITOR_P and friends).
pub const DIST_MONITOR: u64 = 0x08;
/// Separate tags for funs.
pub const FUN_TAGS: u64 = 0x10;
/// Distributed monitoring of registered names.
pub const DIST_MONITOR_NAME: u64 = 0x20;
/// New fun tags.
pub const NEW_FUN_TAGS: u64 = 0x80;
/// Extended pids and ports.
pub const EXTENDED_PIDS_PORTS: u64 = 0x100;
/// `EXPORT_EXT`.
pub const EXPORT_PTR_TAG: u64 = 0x200;
/// Bit binaries.
pub const BIT_BINARIES: u64 = 0x400;
/// `NEW_FLOAT_EXT`.
pub const NEW_FLOATS: u64 = 0x800;
/// Unicode I/O.
pub const UNICODE_IO: u64 = 0x1000;
/// Atom cache in the distribution header (we never offer it, so peers send
/// pass-through frames).
pub const DIST_HDR_ATOM_CACHE: u64 = 0x2000;
/// `SMALL_ATOM_EXT`.
pub const SMALL_ATOM_TAGS: u64 = 0x4000;
/// UTF-8 atoms.
pub const UTF8_ATOMS: u64 = 0x1_0000;
/// Maps.
pub const MAP_TAG: u64 = 0x2_0000;
/// 32-bit creations (`NEW_PID_EXT`, `NEWER_REFERENCE_EXT`).
pub const BIG_CREATION: u64 = 0x4_0000;
/// `SEND_SENDER` instead of `SEND`.
pub const SEND_SENDER: u64 = 0x8_0000;
/// Any term as sequential-trace label.
pub const BIG_SEQTRACE_LABELS: u64 = 0x10_0000;
/// `PAYLOAD_*` exit signals.
pub const EXIT_PAYLOAD: u64 = 0x40_0000;
/// Fragmented messages.
pub const FRAGMENTS: u64 = 0x80_0000;
/// The OTP 23 handshake (version 6, `'N'` name message).
pub const HANDSHAKE_23: u64 = 0x100_0000;
/// The new link protocol (`UNLINK_ID`/`UNLINK_ID_ACK`); mandatory from OTP 26.
pub const UNLINK_ID: u64 = 0x200_0000;
/// Shorthand for [`MANDATORY_25`], as OTP 25+ erts defines it (bit 26).
pub const MANDATORY_25_DIGEST: u64 = 0x400_0000;
/// The value `erl_dist` 0.8 and the protocol document give the digest flag
/// (bit 36). OTP 25 ignores this bit; kept only to document and test the
/// discrepancy.
pub const MANDATORY_25_DIGEST_AS_DOCUMENTED: u64 = 1 << 36;
/// `SPAWN_REQUEST`/`SPAWN_REPLY` (what `erpc`, and so `rpc:call`, use).
pub const SPAWN: u64 = 1 << 32;
/// Dynamic node name request.
pub const NAME_ME: u64 = 1 << 33;
/// Node container types version 4 (32-bit pid fields, 5-word refs); mandatory
/// from OTP 26.
pub const V4_NC: u64 = 1 << 34;
/// Process aliases (`ALIAS_SEND`).
pub const ALIAS: u64 = 1 << 35;

/// The eleven flags OTP 25 makes mandatory (erts reports `0x1070F94`).
pub const MANDATORY_25: u64 = EXTENDED_REFERENCES
    | FUN_TAGS
    | NEW_FUN_TAGS
    | EXTENDED_PIDS_PORTS
    | EXPORT_PTR_TAG
    | BIT_BINARIES
    | NEW_FLOATS
    | UTF8_ATOMS
    | MAP_TAG
    | BIG_CREATION
    | HANDSHAKE_23;

/// What OTP 26 and 27 add to [`MANDATORY_25`].
pub const MANDATORY_26: u64 = MANDATORY_25 | V4_NC | UNLINK_ID;

/// Flags this node offers (without [`PUBLISHED`], which depends on whether
/// the node is hidden).
pub const OFFERED: u64 = MANDATORY_26
    | MANDATORY_25_DIGEST
    | DIST_MONITOR
    | DIST_MONITOR_NAME
    | SEND_SENDER
    | SPAWN
    | ALIAS
    | BIG_SEQTRACE_LABELS
    | UNICODE_IO
    | SMALL_ATOM_TAGS;

/// What we require of a peer: the flags our own encoder and decoder depend on.
/// An OTP 20 node (the original flack release) offers all of them except
/// `HANDSHAKE_23`, `UNLINK_ID` and `V4_NC`, which we do not insist on.
pub const REQUIRED: u64 =
    EXTENDED_REFERENCES | EXTENDED_PIDS_PORTS | UTF8_ATOMS | BIG_CREATION | NEW_FLOATS | MAP_TAG;

/// Flags we offer to a peer, `published` deciding visibility.
pub fn offered(published: bool) -> u64 {
    if published {
        OFFERED | PUBLISHED
    } else {
        OFFERED
    }
}

/// Expands the digest bit as OTP does (`dist_util:expand_mandatory_25_flag`).
pub fn expand(flags: u64) -> u64 {
    if flags & MANDATORY_25_DIGEST != 0 {
        flags | MANDATORY_25
    } else {
        flags
    }
}

/// The required flags missing from a peer's (expanded) flags; 0 when none.
pub fn missing(peer: u64) -> u64 {
    REQUIRED & !expand(peer)
}

/// What both sides use on a connection: the intersection, as `dist_util`
/// computes it.
pub fn negotiated(ours: u64, peer: u64) -> u64 {
    ours & expand(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mandatory_25_matches_what_erts_reports() {
        assert_eq!(MANDATORY_25, 0x1070F94);
    }

    #[test]
    fn digest_is_bit_26_and_expands_to_the_eleven_flags() {
        assert_eq!(MANDATORY_25_DIGEST, 0x0400_0000);
        assert_eq!(expand(MANDATORY_25_DIGEST) & MANDATORY_25, MANDATORY_25);
        assert_eq!(missing(MANDATORY_25_DIGEST), 0);
        assert_ne!(missing(MANDATORY_25_DIGEST_AS_DOCUMENTED), 0);
    }

    #[test]
    fn we_offer_what_otp_26_and_27_demand_plus_monitors() {
        let ours = offered(true);
        assert_eq!(ours & MANDATORY_26, MANDATORY_26);
        assert_ne!(ours & DIST_MONITOR, 0);
        assert_ne!(ours & DIST_MONITOR_NAME, 0);
        assert_eq!(ours & MANDATORY_25_DIGEST_AS_DOCUMENTED, 0);
        assert_eq!(ours & (DIST_HDR_ATOM_CACHE | FRAGMENTS | EXIT_PAYLOAD), 0);
    }

    #[test]
    fn an_otp_25_peer_is_accepted() {
        // erts_internal:get_dflags() default on OTP 25.2.3.
        assert_eq!(missing(0xd07df7fbc), 0);
    }
}
