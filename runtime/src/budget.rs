//! The series-budget assertion `#[metric]` emits when the number of series
//! depends on types the macro cannot see (an enum defined elsewhere, a
//! bucket constant). It runs in a `const`, so an overrun fails the build
//! with a message naming the metric, its series count and the limit.

/// Fails const evaluation when `combinations × per_series > max_series`.
pub const fn check_series_budget(name: &str, combinations: usize, per_series: usize, max_series: usize) {
    let series = combinations.saturating_mul(per_series);
    if series <= max_series {
        return;
    }
    let mut message = Message::new();
    message.push("metric `");
    message.push(name);
    message.push("` can create ");
    message.number(series);
    message.push(" series (");
    message.number(combinations);
    message.push(" label combinations × ");
    message.number(per_series);
    message.push(" per combination), over its budget of ");
    message.number(max_series);
    message.push("; use fewer label values, or raise the budget with `max_series = ");
    message.number(series);
    message.push("`");
    panic!("{}", message.as_str());
}

/// Fails const evaluation when one handler's series in a handler family
/// (`per_handler`, buckets + 2 counted for histograms) overrun its budget;
/// the layout reports overruns that only the number of handlers causes.
pub const fn check_handler_budget(handler: &str, family: &str, per_handler: usize, max_series: usize) {
    if per_handler <= max_series {
        return;
    }
    let mut message = Message::new();
    message.push("handler `");
    message.push(handler);
    message.push("` alone can create ");
    message.number(per_handler);
    message.push(" series of `");
    message.push(family);
    message.push("`, over the family's budget of ");
    message.number(max_series);
    message.push(
        "; keep fewer methods or statuses (HandlerFamilies::methods, status_codes, status_classes) \
                  or raise the budget with HandlerFamilies::max_series(",
    );
    message.number(per_handler);
    message.push(")");
    panic!("{}", message.as_str());
}

/// A fixed buffer to format a message in `const` context, where `format!`
/// is not available.
struct Message {
    bytes: [u8; 512],
    len: usize,
}

impl Message {
    const fn new() -> Message {
        Message { bytes: [0; 512], len: 0 }
    }

    const fn push(&mut self, s: &str) {
        let s = s.as_bytes();
        let mut i = 0;
        while i < s.len() && self.len < self.bytes.len() {
            self.bytes[self.len] = s[i];
            self.len += 1;
            i += 1;
        }
    }

    const fn number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        while count > 0 && self.len < self.bytes.len() {
            count -= 1;
            self.bytes[self.len] = digits[count];
            self.len += 1;
        }
    }

    const fn as_str(&self) -> &str {
        let (used, _) = self.bytes.split_at(self.len);
        match core::str::from_utf8(used) {
            Ok(s) => s,
            // A name cut in the middle of a character: keep what is valid.
            Err(e) => match core::str::from_utf8(used.split_at(e.valid_up_to()).0) {
                Ok(s) => s,
                Err(_) => "series budget exceeded",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn message_names_metric_series_and_limit() {
        let err = std::panic::catch_unwind(|| super::check_series_budget("jobs", 400, 13, 1000)).unwrap_err();
        let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert_eq!(
            message,
            "metric `jobs` can create 5200 series (400 label combinations × 13 per combination), over its budget of 1000; \
             use fewer label values, or raise the budget with `max_series = 5200`"
        );
        super::check_series_budget("ok", 10, 100, 1000);
    }
}
