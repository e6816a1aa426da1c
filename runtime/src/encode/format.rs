//! The exposition protocols, and the choice of one (with the escaping of
//! names) from an HTTP `Accept` header, by the rules of Prometheus'
//! "Scrape protocol content negotiation".

use super::names::Escaping;

/// The syntax of an exposition: what the encoders write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The Prometheus text format (0.0.4, or 1.0.0 with UTF-8 names).
    Prometheus,
    /// OpenMetrics text.
    OpenMetrics,
    /// Prometheus' protobuf format: length-delimited
    /// `io.prometheus.client.MetricFamily` messages.
    Protobuf,
}

impl Format {
    /// The `Content-Type` of a response in this format with legacy
    /// (`underscores`) names, as [`encode`](crate::encode) writes it.
    pub const fn content_type(self) -> &'static str {
        Exposition::from_format(self).content_type()
    }

    /// The format of [`Exposition::from_accept`]'s choice. A response
    /// made with it has legacy names; use [`Exposition::from_accept`] to
    /// honour the scraper's escaping too.
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
        Exposition::from_accept(accept).format()
    }
}

/// A protocol of Prometheus' content negotiation: a media type and its
/// version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// `text/plain; version=0.0.4`: legacy names only.
    PrometheusText0_0_4,
    /// `text/plain; version=1.0.0`: 0.0.4's syntax, with quoted UTF-8
    /// names under `escaping=allow-utf-8`.
    PrometheusText1_0_0,
    /// `application/openmetrics-text; version=0.0.1`: legacy names only.
    OpenMetricsText0_0_1,
    /// `application/openmetrics-text; version=1.0.0`, with quoted UTF-8
    /// names under `escaping=allow-utf-8`.
    OpenMetricsText1_0_0,
    /// `application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily;
    /// encoding=delimited`, with UTF-8 names as they are under
    /// `escaping=allow-utf-8`: what Prometheus asks for first when native
    /// histograms are on (2.x's `--enable-feature=native-histograms`, 3's
    /// `scrape_protocols`).
    PrometheusProtobuf,
}

impl Protocol {
    /// Every protocol, in the order an equal `q` prefers them.
    const PREFERENCE: [Protocol; 5] = [
        Protocol::PrometheusProtobuf,
        Protocol::OpenMetricsText1_0_0,
        Protocol::OpenMetricsText0_0_1,
        Protocol::PrometheusText1_0_0,
        Protocol::PrometheusText0_0_4,
    ];

    /// The syntax the protocol's body is written in.
    pub const fn format(self) -> Format {
        match self {
            Protocol::PrometheusText0_0_4 | Protocol::PrometheusText1_0_0 => Format::Prometheus,
            Protocol::OpenMetricsText0_0_1 | Protocol::OpenMetricsText1_0_0 => Format::OpenMetrics,
            Protocol::PrometheusProtobuf => Format::Protobuf,
        }
    }

    /// Whether the protocol carries an `escaping` parameter, and so may
    /// hold UTF-8 names: the text formats from version 1.0.0 on, and
    /// protobuf (as client_golang negotiates it).
    pub const fn negotiates_escaping(self) -> bool {
        matches!(self, Protocol::PrometheusText1_0_0 | Protocol::OpenMetricsText1_0_0 | Protocol::PrometheusProtobuf)
    }

    fn media_type(self) -> &'static str {
        match self.format() {
            Format::Prometheus => "text/plain",
            Format::OpenMetrics => "application/openmetrics-text",
            Format::Protobuf => "application/vnd.google.protobuf",
        }
    }

    /// The `version` parameter's value; protobuf has none (its `proto`
    /// and `encoding` parameters name it).
    fn version(self) -> &'static str {
        match self {
            Protocol::PrometheusText0_0_4 => "0.0.4",
            Protocol::OpenMetricsText0_0_1 => "0.0.1",
            Protocol::PrometheusText1_0_0 | Protocol::OpenMetricsText1_0_0 => "1.0.0",
            Protocol::PrometheusProtobuf => "",
        }
    }
}

/// What a scrape is answered with: a [`Protocol`] and the [`Escaping`]
/// of names outside the legacy character set. Built from `Accept` by
/// [`from_accept`](Self::from_accept), or from a [`Format`] (legacy names).
///
/// ```
/// use promshard::{Escaping, Exposition, Format, Protocol};
///
/// // Prometheus 3's default scrape header.
/// let v3 = "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
///           application/openmetrics-text;version=0.0.1;q=0.4,\
///           text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
///           text/plain;version=0.0.4;q=0.2,*/*;q=0.1";
/// let chosen = Exposition::from_accept(Some(v3));
/// assert_eq!((chosen.protocol(), chosen.escaping()), (Protocol::OpenMetricsText1_0_0, Escaping::AllowUtf8));
/// assert_eq!(
///     chosen.content_type(),
///     "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
/// );
/// // No header: text 0.0.4, whose names are always legacy ones.
/// assert_eq!(Exposition::from_accept(None), Exposition::from(Format::Prometheus));
/// assert_eq!(Exposition::from_accept(None).escaping(), Escaping::Underscores);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Exposition {
    protocol: Protocol,
    escaping: Escaping,
    created_samples: bool,
}

impl Exposition {
    /// `protocol` with `escaping`; a protocol that cannot hold UTF-8
    /// names ([`Protocol::negotiates_escaping`]) always gets
    /// [`Escaping::Underscores`].
    pub const fn new(protocol: Protocol, escaping: Escaping) -> Exposition {
        let escaping = if protocol.negotiates_escaping() { escaping } else { Escaping::Underscores };
        Exposition { protocol, escaping, created_samples: false }
    }

    /// With `on`, OpenMetrics text carries a `_created` sample for every
    /// counter, histogram and summary series: when the series started
    /// counting, the same in every scrape until its counts reset (in
    /// multiprocess mode, the start of the directory's run: see the
    /// README). Off by default, as in client_golang: a Prometheus 2 server
    /// stores each `_created` sample as a series of its own. The protobuf
    /// exposition always carries the start, in its `created_timestamp`
    /// fields; the Prometheus text formats never do.
    /// [`set_created_samples`](crate::set_created_samples) turns it on for
    /// every exposition of the process.
    ///
    /// ```
    /// use promshard::{Exposition, Format};
    ///
    /// let x = Exposition::from(Format::OpenMetrics).with_created_samples(true);
    /// assert!(x.created_samples());
    /// ```
    pub const fn with_created_samples(self, on: bool) -> Exposition {
        Exposition { created_samples: on, ..self }
    }

    /// Whether OpenMetrics text carries `_created` samples: see
    /// [`with_created_samples`](Self::with_created_samples).
    pub const fn created_samples(self) -> bool {
        self.created_samples
    }

    /// `format` in the protocol [`encode`](crate::encode) has always
    /// written it in (text 0.0.4, OpenMetrics 1.0.0, protobuf), with
    /// legacy names.
    pub const fn from_format(format: Format) -> Exposition {
        let protocol = match format {
            Format::Prometheus => Protocol::PrometheusText0_0_4,
            Format::OpenMetrics => Protocol::OpenMetricsText1_0_0,
            Format::Protobuf => Protocol::PrometheusProtobuf,
        };
        Exposition { protocol, escaping: Escaping::Underscores, created_samples: false }
    }

    /// The protocol.
    pub const fn protocol(self) -> Protocol {
        self.protocol
    }

    /// The protocol's syntax.
    pub const fn format(self) -> Format {
        self.protocol.format()
    }

    /// How names outside the legacy character set are written.
    pub const fn escaping(self) -> Escaping {
        self.escaping
    }

    /// The response's `Content-Type`: media type, version, `charset`, and
    /// for the protocols that negotiate it the `escaping` parameter.
    pub const fn content_type(self) -> &'static str {
        use Escaping::*;
        use Protocol::*;
        match (self.protocol, self.escaping) {
            (PrometheusText0_0_4, _) => "text/plain; version=0.0.4; charset=utf-8",
            (OpenMetricsText0_0_1, _) => "application/openmetrics-text; version=0.0.1; charset=utf-8",
            (PrometheusText1_0_0, AllowUtf8) => "text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8",
            (PrometheusText1_0_0, Underscores) => "text/plain; version=1.0.0; charset=utf-8; escaping=underscores",
            (PrometheusText1_0_0, Dots) => "text/plain; version=1.0.0; charset=utf-8; escaping=dots",
            (PrometheusText1_0_0, Values) => "text/plain; version=1.0.0; charset=utf-8; escaping=values",
            (OpenMetricsText1_0_0, AllowUtf8) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8"
            }
            (OpenMetricsText1_0_0, Underscores) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores"
            }
            (OpenMetricsText1_0_0, Dots) => "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=dots",
            (OpenMetricsText1_0_0, Values) => {
                "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=values"
            }
            // As client_golang's `expfmt` writes it: no charset (the body
            // is binary), the escaping as for text.
            (PrometheusProtobuf, AllowUtf8) => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=allow-utf-8"
            }
            (PrometheusProtobuf, Underscores) => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=underscores"
            }
            (PrometheusProtobuf, Dots) => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=dots"
            }
            (PrometheusProtobuf, Values) => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=values"
            }
        }
    }

    /// Chooses the exposition for a client's `Accept` header (several
    /// headers joined with commas), as Prometheus' content negotiation
    /// asks of a target:
    ///
    /// - each media range is matched against the protocols: a `version`
    ///   must be one of the protocol's (`text/plain` without one, `text/*`
    ///   and `*/*` mean 0.0.4; `application/openmetrics-text` without one
    ///   means any, so 1.0.0); `application/vnd.google.protobuf` is
    ///   protobuf when its `proto` is `io.prometheus.client.MetricFamily`
    ///   and its `encoding` `delimited` (no wildcard means protobuf);
    ///   other parameters are ignored;
    /// - the protocol with the highest `q` wins, a range with `q=0`
    ///   (or an unreadable `q`) excludes nothing but counts for nothing;
    ///   equal `q`s prefer protobuf (the one that can carry native
    ///   histograms), then OpenMetrics 1.0.0, OpenMetrics 0.0.1, text
    ///   1.0.0, text 0.0.4;
    /// - the winning range's `escaping` parameter gives the scheme
    ///   (`allow-utf-8` or `allow-utf8`, `underscores`, `dots`,
    ///   `values`); none, or an unknown value, gives `underscores`, and
    ///   text protocols before 1.0.0 always have it;
    /// - when nothing matches (or there is no header), text 0.0.4.
    ///
    /// ```
    /// use promshard::{Escaping, Exposition, Protocol};
    ///
    /// let chosen = Exposition::from_accept(Some("text/plain;version=1.0.0;escaping=dots"));
    /// assert_eq!((chosen.protocol(), chosen.escaping()), (Protocol::PrometheusText1_0_0, Escaping::Dots));
    /// assert_eq!(chosen.content_type(), "text/plain; version=1.0.0; charset=utf-8; escaping=dots");
    /// let legacy = Exposition::from_accept(Some("text/plain;version=0.0.4;escaping=allow-utf-8"));
    /// assert_eq!((legacy.protocol(), legacy.escaping()), (Protocol::PrometheusText0_0_4, Escaping::Underscores));
    /// ```
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        // (q, preference rank, escaping) of the best range so far.
        let mut best: Option<(f32, usize, Exposition)> = None;
        for range in accept.unwrap_or("").split(',') {
            let Some(range) = MediaRange::parse(range) else { continue };
            if range.q <= 0.0 {
                continue;
            }
            for (rank, protocol) in Protocol::PREFERENCE.into_iter().enumerate() {
                if !range.matches(protocol) {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((q, best_rank, _)) => range.q > q || (range.q == q && rank < best_rank),
                };
                if better {
                    let escaping = range.escaping.unwrap_or(Escaping::Underscores);
                    best = Some((range.q, rank, Exposition::new(protocol, escaping)));
                }
            }
        }
        best.map_or(Exposition::from_format(Format::Prometheus), |(_, _, chosen)| chosen)
    }
}

impl From<Format> for Exposition {
    fn from(format: Format) -> Exposition {
        Exposition::from_format(format)
    }
}

/// One media range of an `Accept` header, with the parameters that
/// matter here.
struct MediaRange<'a> {
    /// Lowercase `type/subtype`.
    media: String,
    version: Option<&'a str>,
    /// `proto` and `encoding`, protobuf's parameters.
    proto: Option<&'a str>,
    encoding: Option<&'a str>,
    escaping: Option<Escaping>,
    q: f32,
}

impl<'a> MediaRange<'a> {
    fn parse(range: &'a str) -> Option<MediaRange<'a>> {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next()?.to_ascii_lowercase();
        if media.is_empty() {
            return None;
        }
        let mut out = MediaRange { media, version: None, proto: None, encoding: None, escaping: None, q: 1.0 };
        for param in parts {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                // A `q` that is no number in 0..=1 gives nothing a weight.
                "q" => out.q = value.parse().ok().filter(|q: &f32| (0.0..=1.0).contains(q)).unwrap_or(0.0),
                "version" => out.version = Some(value),
                "proto" => out.proto = Some(value),
                "encoding" => out.encoding = Some(value),
                "escaping" => out.escaping = Escaping::from_param(value),
                _ => {}
            }
        }
        Some(out)
    }

    fn matches(&self, protocol: Protocol) -> bool {
        if protocol == Protocol::PrometheusProtobuf {
            // Only asked for by name: client_golang's rule.
            return self.media == protocol.media_type()
                && self.proto == Some("io.prometheus.client.MetricFamily")
                && self.encoding == Some("delimited");
        }
        let wildcard = match self.media.as_str() {
            "*/*" => true,
            "text/*" if protocol.format() == Format::Prometheus => true,
            media if media == protocol.media_type() => false,
            _ => return false,
        };
        match self.version {
            Some(version) => version == protocol.version(),
            // A bare `text/plain` (or a wildcard) is what scrapers older
            // than the version parameter sent: the 0.0.4 format.
            None if wildcard || protocol.format() == Format::Prometheus => protocol == Protocol::PrometheusText0_0_4,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Escaping::*;
    use Protocol::*;

    #[test]
    fn negotiation() {
        let cases = [
            ("application/openmetrics-text", OpenMetricsText1_0_0, Underscores),
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", OpenMetricsText1_0_0, Underscores),
            ("application/openmetrics-text; version=0.0.1", OpenMetricsText0_0_1, Underscores),
            ("application/openmetrics-text; version=2.0.0", PrometheusText0_0_4, Underscores),
            ("text/plain;q=0.9,application/openmetrics-text;q=0.5", PrometheusText0_0_4, Underscores),
            ("text/plain;q=0.5,application/openmetrics-text;q=0.9", OpenMetricsText1_0_0, Underscores),
            ("application/openmetrics-text;q=0", PrometheusText0_0_4, Underscores),
            ("application/openmetrics-text;q=x", PrometheusText0_0_4, Underscores),
            ("application/openmetrics-text;q=2", PrometheusText0_0_4, Underscores),
            ("application/json", PrometheusText0_0_4, Underscores),
            ("", PrometheusText0_0_4, Underscores),
            ("*/*", PrometheusText0_0_4, Underscores),
            ("text/*;escaping=allow-utf-8", PrometheusText0_0_4, Underscores),
            ("text/plain;version=1.0.0", PrometheusText1_0_0, Underscores),
            ("TEXT/Plain; Version=1.0.0; Escaping=allow-utf8", PrometheusText1_0_0, AllowUtf8),
            ("text/plain;version=1.0.0;escaping=values", PrometheusText1_0_0, Values),
            ("text/plain;version=1.0.0;escaping=bogus", PrometheusText1_0_0, Underscores),
            ("text/plain;version=0.0.4;escaping=allow-utf-8", PrometheusText0_0_4, Underscores),
            // Equal q: OpenMetrics first.
            ("text/plain;version=1.0.0,application/openmetrics-text", OpenMetricsText1_0_0, Underscores),
            (
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,\
                 application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;\
                 escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                OpenMetricsText1_0_0,
                AllowUtf8,
            ),
            // Prometheus 2.x's scrape header.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                OpenMetricsText1_0_0,
                Underscores,
            ),
            // A protobuf-first header.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.5,\
                 application/openmetrics-text;version=1.0.0;escaping=dots;q=0.4,*/*;q=0.0",
                PrometheusProtobuf,
                Underscores,
            ),
            // Prometheus 2.42 with `--enable-feature=native-histograms`.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,\
                 application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,\
                 text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                PrometheusProtobuf,
                Underscores,
            ),
            (
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; escaping=allow-utf-8",
                PrometheusProtobuf,
                AllowUtf8,
            ),
            // Another encoding, or message, or none: not ours.
            (
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text,text/plain;q=0.1",
                PrometheusText0_0_4,
                Underscores,
            ),
            (
                "application/vnd.google.protobuf;proto=other.Message;encoding=delimited",
                PrometheusText0_0_4,
                Underscores,
            ),
            ("application/vnd.google.protobuf", PrometheusText0_0_4, Underscores),
            // Equal q: protobuf first.
            (
                "application/openmetrics-text,application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
                PrometheusProtobuf,
                Underscores,
            ),
        ];
        for (header, protocol, escaping) in cases {
            let chosen = Exposition::from_accept(Some(header));
            assert_eq!((chosen.protocol(), chosen.escaping()), (protocol, escaping), "{header}");
        }
    }

    #[test]
    fn content_types_carry_escaping_from_1_0_0_on() {
        for protocol in Protocol::PREFERENCE {
            for escaping in Escaping::ALL {
                let chosen = Exposition::new(protocol, escaping);
                let content_type = chosen.content_type();
                assert!(content_type.starts_with(protocol.media_type()), "{content_type}");
                if protocol != Protocol::PrometheusProtobuf {
                    assert!(content_type.contains(&format!("version={};", protocol.version())), "{content_type}");
                }
                let param = format!("; escaping={}", chosen.escaping().as_str());
                assert_eq!(content_type.ends_with(&param), protocol.negotiates_escaping(), "{content_type}");
                assert_eq!(Exposition::from_accept(Some(content_type)), chosen, "{content_type}");
            }
        }
    }
}
