//! The relay of a tunnel: bytes both ways between its two ends, the end of each direction
//! passed on after everything before it (half-close), and a per-turn budget for fairness.
//!
//! Generic over the ends' stream ([`Stream`]), so tests and the fuzzer drive this very code
//! over in-memory streams.

use crate::buffer::BufferPool;
use crate::endpoint::{relay, Endpoint, Eof, RelayError, Stream};

use super::reason::failure;
use super::{EndReason, Side, TURN_BUDGET};

/// Both directions of a tunnel's relay.
#[derive(Debug, Default)]
pub struct Relay {
    /// From the client to the target.
    pub to_target: Direction,
    /// From the target to the client.
    pub to_client: Direction,
}

/// One direction of the relay.
#[derive(Debug, Default)]
pub struct Direction {
    /// Plaintext bytes moved.
    pub bytes: u64,
    /// The source has ended; the sink's write side is being shut.
    pub ended: Option<Eof>,
    /// The sink's write side is shut: nothing more will cross in this direction.
    pub finished: Option<Eof>,
}

impl Direction {
    /// Whether the sink has been told the end of the stream: nothing more will cross.
    pub fn is_finished(&self) -> bool {
        self.finished.is_some()
    }
}

impl Relay {
    /// Moves bytes both ways between `down` (the client's end) and `up` (the target's)
    /// until nothing moves or the budget is spent. Each direction has half the turn's
    /// budget, so a bulk upload cannot starve the replies coming back. Returns (whether
    /// anything moved, whether a budget ran out with work perhaps left).
    pub fn run<S: Stream>(
        &mut self,
        down: &mut Endpoint<S>,
        up: &mut Endpoint<S>,
        pool: &mut BufferPool,
    ) -> Result<(bool, bool), EndReason> {
        let (mut to_target_budget, mut to_client_budget) = (TURN_BUDGET / 2, TURN_BUDGET / 2);
        let mut progressed = false;
        loop {
            let mut moved = down.flush(pool).map_err(|e| failure(Side::Client, e))?;
            moved |= up.flush(pool).map_err(|e| failure(Side::Target, e))?;
            moved |= pump(
                down,
                up,
                &mut self.to_target,
                Side::Client,
                pool,
                &mut to_target_budget,
            )?;
            moved |= pump(
                up,
                down,
                &mut self.to_client,
                Side::Target,
                pool,
                &mut to_client_budget,
            )?;
            progressed |= moved;
            if !moved {
                let spent = to_target_budget == 0 || to_client_budget == 0;
                return Ok((progressed, spent));
            }
        }
    }

    /// Whether both directions have finished: the tunnel can be closed without losing data.
    pub fn is_finished(&self) -> bool {
        self.to_target.is_finished() && self.to_client.is_finished()
    }

    /// The direction whose sink is `side`: what that side's peer receives.
    pub fn towards(&self, side: Side) -> &Direction {
        match side {
            Side::Client => &self.to_client,
            Side::Target => &self.to_target,
        }
    }

    /// Whether one direction has ended (the tunnel is half-closed).
    pub fn is_half_closed(&self) -> bool {
        self.to_target.ended.is_some() || self.to_client.ended.is_some()
    }

    /// How a relay that finished both directions ended.
    pub fn clean_end(&self) -> EndReason {
        match (self.to_target.finished, self.to_client.finished) {
            (Some(Eof::Truncated), _) => EndReason::Truncated(Side::Client),
            (_, Some(Eof::Truncated)) => EndReason::Truncated(Side::Target),
            _ => EndReason::Clean,
        }
    }
}

/// One direction's share of [`Relay::run`]: from the `src_side` end to the other one.
/// Returns whether anything moved; spends `budget`.
fn pump<S: Stream>(
    src: &mut Endpoint<S>,
    dst: &mut Endpoint<S>,
    dir: &mut Direction,
    src_side: Side,
    pool: &mut BufferPool,
    budget: &mut usize,
) -> Result<bool, EndReason> {
    if dir.finished.is_some() {
        return Ok(false);
    }
    let dst_side = match src_side {
        Side::Client => Side::Target,
        Side::Target => Side::Client,
    };
    let mut moved = false;
    if dir.ended.is_none() && *budget > 0 {
        let r = relay(src, dst, pool, *budget).map_err(|e| match e {
            RelayError::Source(e) => failure(src_side, e),
            RelayError::Sink(e) => failure(dst_side, e),
        })?;
        dir.bytes += r.bytes as u64;
        *budget = if r.budget_spent {
            0
        } else {
            budget.saturating_sub(r.bytes)
        };
        moved = r.bytes > 0;
        if let Some(eof) = r.ended {
            dir.ended = Some(eof);
            moved = true;
        }
    }
    if let Some(eof) = dir.ended {
        // Everything read has been handed to the sink; pass the end on after it.
        if dst.shut_write(pool).map_err(|e| failure(dst_side, e))? {
            dir.finished = Some(eof);
            moved = true;
        }
    }
    Ok(moved)
}
