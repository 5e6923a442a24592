//! W3C Trace Context (`traceparent`) carried in the `traceparent` extension.

use std::fmt;
use std::str::FromStr;

use crate::error::EventError;

/// A parsed W3C `traceparent` value: `00-<trace-id>-<parent-id>-<flags>`.
///
/// Events carry the producer's trace context so consumers continue the same
/// trace: [`TraceContext::child`] keeps the trace id and mints a new span id.
///
/// ```
/// use saas_events::TraceContext;
///
/// let parent: TraceContext = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
/// assert!(parent.sampled());
/// let child = parent.child(0x1234);
/// assert_eq!(child.trace_id(), parent.trace_id());
/// assert_eq!(child.to_string(), "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000001234-01");
/// assert!("00-00000000000000000000000000000000-00f067aa0ba902b7-01".parse::<TraceContext>().is_err());
/// # Ok::<(), saas_events::EventError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: u128,
    parent_id: u64,
    flags: u8,
}

impl TraceContext {
    /// A context from its parts; `None` if either id is zero (invalid in W3C).
    pub fn new(trace_id: u128, parent_id: u64, sampled: bool) -> Option<Self> {
        (trace_id != 0 && parent_id != 0).then_some(Self {
            trace_id,
            parent_id,
            flags: u8::from(sampled),
        })
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The parent span id as 16 lowercase hex digits.
    pub fn parent_id(&self) -> String {
        format!("{:016x}", self.parent_id)
    }

    /// Whether the producer sampled this trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The context for a span started under this one: same trace id and
    /// flags, `span_id` as the new parent id (a zero id is replaced by 1).
    pub fn child(&self, span_id: u64) -> Self {
        Self {
            trace_id: self.trace_id,
            parent_id: span_id.max(1),
            flags: self.flags,
        }
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

impl FromStr for TraceContext {
    type Err = EventError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| EventError::invalid("traceparent", reason);
        let parts: Vec<&str> = s.split('-').collect();
        let [version, trace, parent, flags] = parts.as_slice() else {
            return Err(bad("expected version-traceid-parentid-flags"));
        };
        let hex = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !hex(version, 2) || *version == "ff" {
            return Err(bad(
                "version must be two lowercase hex digits other than ff",
            ));
        }
        if *version == "00" && parts.len() != 4 {
            return Err(bad("version 00 has exactly four fields"));
        }
        if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return Err(bad(
                "trace id, parent id and flags must be 32, 16 and 2 lowercase hex digits",
            ));
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| bad("bad trace id"))?;
        let parent_id = u64::from_str_radix(parent, 16).map_err(|_| bad("bad parent id"))?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad("bad flags"))?;
        if trace_id == 0 || parent_id == 0 {
            return Err(bad("trace id and parent id must not be all zeros"));
        }
        Ok(Self {
            trace_id,
            parent_id,
            flags,
        })
    }
}
