//! HEALTHCHECK: `NONE`, or `CMD` with its interval/timeout/retries flags.

use super::flags::{FlagKind, Flags};
use super::{at_least_one, err, no_flags, parse_duration_ns, Command, HealthCmd, InstructionError};
use crate::parser::Node;

pub(super) fn parse_healthcheck(node: &Node) -> Result<Command, InstructionError> {
    let words = at_least_one(node)?;
    let typ = words[0].to_uppercase();
    let rest = &words[1..];
    if typ == "NONE" {
        if !rest.is_empty() {
            return Err(err(node, "HEALTHCHECK NONE takes no arguments"));
        }
        no_flags(node)?;
        return Ok(Command::Healthcheck(HealthCmd::None));
    }
    let f = Flags::new(&[
        ("interval", FlagKind::String),
        ("timeout", FlagKind::String),
        ("start-period", FlagKind::String),
        ("start-interval", FlagKind::String),
        ("retries", FlagKind::String),
    ])
    .parse(&node.flags)
    .map_err(|e| err(node, e))?;
    if typ != "CMD" {
        return Err(err(
            node,
            format!("Unknown type \"{typ}\" in HEALTHCHECK (try CMD)"),
        ));
    }
    if rest.is_empty() {
        return Err(err(node, "Missing command after HEALTHCHECK CMD"));
    }
    let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
    test.extend(rest.iter().cloned());
    let interval = |name: &str| -> Result<i64, InstructionError> {
        let Some(v) = f.string(name) else {
            return Ok(0);
        };
        let d = parse_duration_ns(&v).map_err(|e| err(node, e))?;
        if d != 0 && d < 1_000_000 {
            return Err(err(
                node,
                format!("Interval \"{name}\" cannot be less than 1ms"),
            ));
        }
        Ok(d)
    };
    let retries = match f.string("retries") {
        None => 0,
        Some(v) => {
            let r: i32 = v
                .parse()
                .map_err(|_| err(node, format!("invalid --retries value {v:?}")))?;
            if r < 0 {
                return Err(err(node, format!("--retries cannot be negative ({r})")));
            }
            i64::from(r)
        }
    };
    Ok(Command::Healthcheck(HealthCmd::Check {
        test,
        interval: interval("interval")?,
        timeout: interval("timeout")?,
        start_period: interval("start-period")?,
        start_interval: interval("start-interval")?,
        retries,
    }))
}
