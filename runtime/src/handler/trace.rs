//! The trace a call belongs to, for the exemplars of what it records:
//! with the `opentelemetry` feature, the trace and span ids of the span
//! active (in OpenTelemetry's current context) when the call ends.

use crate::instruments::counter::CounterSeries;
use crate::instruments::histogram::HistogramSeries;

/// Calls `f` with the exemplar labels of the active span (`trace_id`,
/// `span_id`, lowercase hex as W3C trace context writes them), or with
/// `None` when no valid span is active or the feature is off. Allocates
/// nothing.
#[inline(always)]
pub(crate) fn with_active_span<R>(f: impl FnOnce(Option<&[(&str, &str)]>) -> R) -> R {
    #[cfg(feature = "opentelemetry")]
    {
        use opentelemetry::trace::TraceContextExt;
        let ids = opentelemetry::Context::map_current(|cx| {
            let span = cx.span();
            let context = span.span_context();
            context.is_valid().then(|| (context.trace_id().to_bytes(), context.span_id().to_bytes()))
        });
        if let Some((trace, span)) = ids {
            let (mut trace_hex, mut span_hex) = ([0u8; 32], [0u8; 16]);
            let labels = [("trace_id", hex(&trace, &mut trace_hex)), ("span_id", hex(&span, &mut span_hex))];
            return f(Some(&labels));
        }
    }
    f(None)
}

/// Records the end of a call or request that took `elapsed` seconds: its
/// duration and its count, with the active span's ids as their exemplar
/// when there is one.
#[inline(always)]
pub(crate) fn record(duration: HistogramSeries, calls: CounterSeries, elapsed: f64) {
    with_active_span(|exemplar| match exemplar {
        Some(labels) => {
            duration.observe_with_exemplar(elapsed, labels);
            calls.inc_with_exemplar(labels);
        }
        None => {
            duration.observe(elapsed);
            calls.inc();
        }
    });
}

/// `bytes` in lowercase hex, written into `out` (twice as long).
#[cfg(feature = "opentelemetry")]
fn hex<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII digits were written.
    core::str::from_utf8(out).unwrap_or_default()
}

/// Whether the handler families keep exemplars: with the feature only,
/// since each one costs a counter or bucket 544 bytes more.
pub(crate) const EXEMPLARS: bool = cfg!(feature = "opentelemetry");

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};

    #[test]
    fn the_active_spans_ids_in_hex() {
        assert_eq!(super::with_active_span(|labels| labels.map(<[_]>::len)), None);
        let ids = (TraceId::from_bytes([0xab; 16]), SpanId::from_bytes([0x01; 8]));
        let context = SpanContext::new(ids.0, ids.1, TraceFlags::SAMPLED, true, TraceState::default());
        let _active = opentelemetry::Context::new().with_remote_span_context(context).attach();
        let labels = super::with_active_span(|labels| {
            labels.map(|l| l.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>())
        });
        let expected = [("trace_id", "ab".repeat(16)), ("span_id", "01".repeat(8))];
        assert_eq!(labels, Some(expected.map(|(k, v)| (k.to_owned(), v)).to_vec()));
    }
}
