//! The two exposition formats and the choice between them from an HTTP
//! `Accept` header.

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Chooses the format a client asked for in its `Accept` header, by
    /// quality value. OpenMetrics is chosen when the client ranks it at
    /// least as high as the text format (Prometheus' own scrape header
    /// does); anything else, including no header, gets the text format.
    ///
    /// ```
    /// use promshard::Format;
    ///
    /// let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    /// assert_eq!(Format::from_accept(Some(prometheus)), Format::OpenMetrics);
    /// assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
    /// assert_eq!(Format::from_accept(None), Format::Prometheus);
    /// ```
    pub fn from_accept(accept: Option<&str>) -> Format {
        let mut openmetrics = None::<f32>;
        let mut text = None::<f32>;
        for range in accept.unwrap_or("").split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0f32;
            let mut version = None;
            for param in parts {
                let (key, value) = param.split_once('=').unwrap_or((param, ""));
                let value = value.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "q" => q = value.parse().unwrap_or(0.0),
                    "version" => version = Some(value.to_owned()),
                    _ => {}
                }
            }
            let slot = match media.as_str() {
                "application/openmetrics-text" if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) => {
                    &mut openmetrics
                }
                "text/plain" | "text/*" | "*/*" => &mut text,
                _ => continue,
            };
            if q > 0.0 && slot.is_none_or(|best| q > best) {
                *slot = Some(q);
            }
        }
        match (openmetrics, text) {
            (Some(om), Some(t)) if om >= t => Format::OpenMetrics,
            (Some(_), None) => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Format::{self, *};

    #[test]
    fn negotiation() {
        let cases = [
            ("application/openmetrics-text", OpenMetrics),
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", OpenMetrics),
            ("application/openmetrics-text; version=2.0.0", Prometheus),
            ("text/plain;q=0.9,application/openmetrics-text;q=0.5", Prometheus),
            ("text/plain;q=0.5,application/openmetrics-text;q=0.9", OpenMetrics),
            ("application/openmetrics-text;q=0", Prometheus),
            ("application/json", Prometheus),
            ("", Prometheus),
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                 application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
                 escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                OpenMetrics,
            ),
        ];
        for (header, want) in cases {
            assert_eq!(Format::from_accept(Some(header)), want, "{header}");
        }
    }
}
