//! The SQL of the journey: one async fn per query, typed rows in and out. All SQL lives here
//! (the stage lock in `locks`, the demo's seeding in `demo`, `serve`'s health ping in
//! `Db::ping`); strings become the `domain` enums where a row is read.
//!
//! Every call returns its error with context; a failed lookup is never turned into "no row".
//! Eligibility queries compare with bound `$n::timestamptz` parameters (the run's clock), never
//! with `now()`.

pub mod bookings;
pub(crate) mod demo;
pub mod ledger;
pub(crate) mod locks;
pub(crate) mod migrate;
mod pool;
pub(crate) mod reconcile;
pub(crate) mod reports;
pub(crate) mod retention;
pub(crate) mod runs;
pub(crate) mod sms;
pub(crate) mod suppressions;
pub(crate) mod tidy;
pub(crate) mod webhook;

pub use locks::STAGE_LOCK_NS;
pub use pool::{connect, connect_as, Db, Unreachable};
pub use pool::{
    SERVE_CONFIRM_CONNECTIONS, SERVE_CONFIRM_PAGES, SERVE_CONFIRM_SENDS, SERVE_INGEST_CONNECTIONS,
};

/// Renumbers the placeholders of `sql` (`$2` → `$7`, …) by `map`, all at once, so a statement
/// built for its own `$1..$n` can be one part of a larger statement with other parameters.
/// Placeholders not in `map` stay as they are.
pub(crate) fn renumber(sql: &str, map: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '$' {
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let to = digits
            .parse::<usize>()
            .ok()
            .and_then(|n| map.iter().find(|(from, _)| *from == n).map(|(_, to)| *to));
        match to {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str(&digits),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renumber_maps_every_placeholder_at_once_and_keeps_the_others() {
        let sql = "a = $1 AND b = $2::timestamptz AND c = $3 AND d = $12 AND e = '$'";
        assert_eq!(
            super::renumber(sql, &[(2, 3), (3, 5), (12, 2)]),
            "a = $1 AND b = $3::timestamptz AND c = $5 AND d = $2 AND e = '$'"
        );
    }
}
