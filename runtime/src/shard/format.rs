//! The `.promshard` file format: a fixed header, a schema describing every
//! metric, a log of strings learned at run time, then the slots. See
//! `SHARD_FORMAT.md` beside this file; the two must change together.

use std::fmt;

use crate::descriptor::{Descriptor, GaugeMode, Kind};
use crate::labels::LabelDomain;
use crate::native::{self, NativeBuckets};

/// The extension of shard files (ours; Python's end in `.db`).
pub(crate) const EXTENSION: &str = "promshard";
pub(crate) const MAGIC: [u8; 8] = *b"PSHARD\0\0";
/// The newest version, which this version reads and writes: 4, a
/// schema with a native histogram (metric flag bit 2, its parameters
/// after its width) or a metric that keeps exemplars (metric flag bit 1,
/// its exemplar slots counted in its width). A file with neither is
/// still written as [`VERSION_UTF8_NAMES`] when it has metric or label
/// names outside the legacy character set (`http.server.request.duration`),
/// and as [`VERSION_LEGACY_NAMES`] otherwise, so that older readers read
/// every file they can; they skip a newer file as one of a newer version,
/// since their schema check would take its contents for corruption.
pub(crate) const VERSION: u32 = 4;
/// The newest version this one reads.
pub(crate) const VERSION_NEWEST: u32 = VERSION;
/// 3: names outside the legacy character set, no native histogram and no
/// exemplars.
pub(crate) const VERSION_UTF8_NAMES: u32 = 3;
/// 2: info pairs moved from the string log to the info metric's slots.
pub(crate) const VERSION_LEGACY_NAMES: u32 = 2;
pub(crate) const HEADER_LEN: usize = 128;
/// Bit 0 of `flags`: the file is the archive of dead workers.
pub(crate) const FLAG_ARCHIVE: u32 = 1;
/// Longest label value the string log keeps.
pub(crate) const MAX_STRING: usize = crate::descriptor::MAX_LABEL_VALUE;

/// Why a shard file could not be used; the `reason` label of
/// `promshard_shard_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ShardError {
    /// Shorter than its header says.
    Truncated,
    /// Not a promshard file.
    Foreign,
    /// Written by a newer format version.
    Version,
    /// A checksum does not match.
    Checksum,
    /// The schema does not describe the file.
    Schema,
    /// Owned by another user, not a regular file, or a symlink.
    Untrusted,
    /// The file could not be opened or read.
    Io,
    /// A Python prometheus_client `.db` file that could not be parsed.
    Python,
    /// The process is out of file descriptors (`ulimit -n`).
    Descriptors,
    /// This process's own shard is no longer in its directory (the
    /// directory was removed or replaced, or the file deleted): no other
    /// process's scrape sees its counts any more.
    Unlinked,
}

impl ShardError {
    pub(crate) const ALL: [ShardError; 10] = [
        ShardError::Truncated,
        ShardError::Foreign,
        ShardError::Version,
        ShardError::Checksum,
        ShardError::Schema,
        ShardError::Untrusted,
        ShardError::Io,
        ShardError::Python,
        ShardError::Descriptors,
        ShardError::Unlinked,
    ];

    pub(crate) fn reason(self) -> &'static str {
        match self {
            ShardError::Truncated => "truncated",
            ShardError::Foreign => "foreign",
            ShardError::Version => "version",
            ShardError::Checksum => "checksum",
            ShardError::Schema => "schema",
            ShardError::Untrusted => "untrusted",
            ShardError::Io => "io",
            ShardError::Python => "python",
            ShardError::Descriptors => "descriptors",
            ShardError::Unlinked => "unlinked",
        }
    }
}

impl ShardError {
    /// The reason with what it means, for people.
    pub(crate) fn describe(self) -> String {
        let what = match self {
            ShardError::Truncated => "shorter than its header says",
            ShardError::Foreign => "not a promshard shard",
            ShardError::Version => "written by a newer format version",
            ShardError::Checksum => "header or schema checksum mismatch (corrupt)",
            ShardError::Schema => "schema does not describe the file (corrupt)",
            ShardError::Untrusted => "a symlink, not a regular file, or owned by another user",
            ShardError::Io => "could not be opened or read",
            ShardError::Python => "a Python .db file that could not be parsed",
            ShardError::Descriptors => "no file descriptor left to open it (raise `ulimit -n`)",
            ShardError::Unlinked => {
                "this process's own shard, no longer in the directory (removed or replaced while the process \
                 runs): its counts are seen by its own scrapes only, until it restarts"
            }
        };
        format!("{}: {what}", self.reason())
    }
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// FNV-1a, 64 bits: enough to catch torn or corrupted metadata; the
/// format has no adversary that could forge it usefully (files are owned
/// by the reading user).
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= b as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The fixed-size header at offset 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// [`VERSION`] or [`VERSION_LEGACY_NAMES`].
    pub(crate) version: u32,
    pub(crate) flags: u32,
    pub(crate) pid: u32,
    pub(crate) created_nanos: u64,
    /// When the run this file belongs to started (Unix nanoseconds): the
    /// start of the first process of the run, which every later process
    /// copies, and the earliest of the absorbed files' for an archive.
    /// Files of older versions have 0 here: [`run_started`](Self::run_started)
    /// falls back to their own creation.
    pub(crate) run_started_nanos: u64,
    pub(crate) nonce: u64,
    pub(crate) schema_offset: u64,
    pub(crate) schema_len: u64,
    pub(crate) strings_offset: u64,
    pub(crate) strings_len: u64,
    pub(crate) slots_offset: u64,
    pub(crate) slots_count: u64,
    pub(crate) schema_checksum: u64,
}

impl Header {
    /// The header of a file holding `schema`, a string log of
    /// `strings_len` bytes and `slots_count` slots, laid out in that order
    /// after the header: the log 8-aligned, the slots 64-aligned.
    pub(crate) fn layout(
        flags: u32,
        pid: u32,
        created_nanos: u64,
        nonce: u64,
        (schema, version): (&[u8], u32),
        strings_len: usize,
        slots_count: usize,
    ) -> Header {
        let strings_offset = (HEADER_LEN + schema.len()).next_multiple_of(8);
        let strings_len = strings_len.next_multiple_of(8);
        Header {
            version,
            flags,
            pid,
            created_nanos,
            run_started_nanos: created_nanos,
            nonce,
            schema_offset: HEADER_LEN as u64,
            schema_len: schema.len() as u64,
            strings_offset: strings_offset as u64,
            strings_len: strings_len as u64,
            slots_offset: (strings_offset + strings_len).next_multiple_of(64) as u64,
            slots_count: slots_count as u64,
            schema_checksum: checksum(schema),
        }
    }

    /// When the file's run started: [`run_started_nanos`](Self::run_started_nanos),
    /// or for a file of an older version (0 there) its own creation, never
    /// later than the run's start as that version saw it.
    pub(crate) fn run_started(&self) -> u64 {
        match self.run_started_nanos {
            0 => self.created_nanos,
            started => started.min(self.created_nanos),
        }
    }

    /// The file's length: up to the end of the slots.
    pub(crate) fn file_len(&self) -> usize {
        (self.slots_offset + self.slots_count * 8) as usize
    }

    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut out, 8, self.version);
        put_u32(&mut out, 12, HEADER_LEN as u32);
        put_u32(&mut out, 16, self.flags);
        put_u32(&mut out, 20, self.pid);
        let words = [
            self.created_nanos,
            self.nonce,
            self.schema_offset,
            self.schema_len,
            self.strings_offset,
            self.strings_len,
            self.slots_offset,
            self.slots_count,
            self.schema_checksum,
            self.run_started_nanos,
        ];
        for (i, w) in words.iter().enumerate() {
            put_u64(&mut out, 24 + 8 * i, *w);
        }
        let sum = checksum(&out[..HEADER_LEN - 8]);
        put_u64(&mut out, HEADER_LEN - 8, sum);
        out
    }

    /// Decodes and validates a header against the file's length.
    pub(crate) fn decode(bytes: &[u8], file_len: u64) -> Result<Header, ShardError> {
        if bytes.len() < 16 {
            return Err(if bytes.starts_with(&MAGIC[..bytes.len().min(8)]) {
                ShardError::Truncated
            } else {
                ShardError::Foreign
            });
        }
        if bytes[0..8] != MAGIC {
            return Err(ShardError::Foreign);
        }
        let version = get_u32(bytes, 8);
        if !(VERSION_LEGACY_NAMES..=VERSION_NEWEST).contains(&version) {
            return Err(ShardError::Version);
        }
        if bytes.len() < HEADER_LEN {
            return Err(ShardError::Truncated);
        }
        if get_u64(bytes, HEADER_LEN - 8) != checksum(&bytes[..HEADER_LEN - 8]) {
            return Err(ShardError::Checksum);
        }
        let word = |i: usize| get_u64(bytes, 24 + 8 * i);
        let header = Header {
            version,
            flags: get_u32(bytes, 16),
            pid: get_u32(bytes, 20),
            created_nanos: word(0),
            nonce: word(1),
            schema_offset: word(2),
            schema_len: word(3),
            strings_offset: word(4),
            strings_len: word(5),
            slots_offset: word(6),
            slots_count: word(7),
            schema_checksum: word(8),
            run_started_nanos: word(9),
        };
        let end = |offset: u64, len: u64| offset.checked_add(len).ok_or(ShardError::Schema);
        let slots_end = end(header.slots_offset, header.slots_count.checked_mul(8).ok_or(ShardError::Schema)?)?;
        let ordered = header.schema_offset >= HEADER_LEN as u64
            && end(header.schema_offset, header.schema_len)? <= header.strings_offset
            && end(header.strings_offset, header.strings_len)? <= header.slots_offset
            && header.slots_offset % 8 == 0
            && header.strings_offset % 8 == 0;
        if !ordered {
            return Err(ShardError::Schema);
        }
        if slots_end > file_len {
            return Err(ShardError::Truncated);
        }
        Ok(header)
    }
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn get_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// One metric of a schema: its description and where its slots start.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SchemaEntry {
    pub(crate) desc: &'static Descriptor,
    pub(crate) offset: usize,
}

/// One metric's description as the schema stores it, borrowed from a
/// [`Descriptor`] or built by the compactor.
pub(crate) struct MetricSpec<'a> {
    pub(crate) name: &'a str,
    pub(crate) help: &'a str,
    pub(crate) unit: Option<&'a str>,
    pub(crate) kind: Kind,
    pub(crate) mode: GaugeMode,
    /// [`Descriptor::sparse`].
    pub(crate) sparse: bool,
    /// [`Descriptor::exemplars`].
    pub(crate) exemplars: bool,
    /// Each label's name and, for a fixed list, its values; `Err(capacity)`
    /// for a bounded label.
    pub(crate) labels: Vec<(&'a str, Result<Vec<&'a str>, usize>)>,
    pub(crate) buckets: &'a [f64],
    pub(crate) states: &'a [&'a str],
    pub(crate) offset: usize,
    pub(crate) series: usize,
    pub(crate) width: usize,
    /// [`Descriptor::native`].
    pub(crate) native: Option<NativeBuckets>,
}

impl MetricSpec<'_> {
    pub(crate) fn of(desc: &Descriptor, offset: usize) -> MetricSpec<'_> {
        let labels = desc
            .label_names
            .iter()
            .zip(desc.label_domains)
            .map(|(name, domain)| match domain {
                LabelDomain::Values(values) => (*name, Ok(values.to_vec())),
                LabelDomain::Bounded { capacity } => (*name, Err(*capacity)),
            })
            .collect();
        MetricSpec {
            name: desc.name,
            help: desc.help,
            unit: desc.unit,
            kind: desc.kind,
            mode: desc.mode,
            sparse: desc.sparse,
            exemplars: desc.exemplars,
            labels,
            buckets: desc.buckets,
            states: desc.states,
            offset,
            series: desc.series,
            width: desc.width,
            native: desc.native,
        }
    }
}

/// Serialises the descriptions of `metrics`, each with its slot offset;
/// returns the schema and the format version a file holding it has.
pub(crate) fn encode_schema(metrics: &[(&Descriptor, usize)]) -> (Vec<u8>, u32) {
    let specs: Vec<MetricSpec<'_>> = metrics.iter().map(|(d, o)| MetricSpec::of(d, *o)).collect();
    encode_specs(&specs)
}

/// As [`encode_schema`], from specs.
pub(crate) fn encode_specs(metrics: &[MetricSpec<'_>]) -> (Vec<u8>, u32) {
    let legacy = metrics.iter().all(|m| {
        crate::descriptor::is_legacy_metric_name(m.name)
            && m.labels.iter().all(|(name, _)| crate::descriptor::is_legacy_label_name(name))
    });
    let version = if metrics.iter().any(|m| m.native.is_some() || m.exemplars) {
        VERSION
    } else if legacy {
        VERSION_LEGACY_NAMES
    } else {
        VERSION_UTF8_NAMES
    };
    (encode_spec_bytes(metrics), version)
}

fn encode_spec_bytes(metrics: &[MetricSpec<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(metrics.len() as u32).to_le_bytes());
    for m in metrics {
        put_str(&mut out, m.name);
        put_str(&mut out, m.help);
        put_str(&mut out, m.unit.unwrap_or(""));
        out.push(kind_code(m.kind));
        out.push(mode_code(m.mode));
        let flags = if m.sparse { METRIC_FLAG_SPARSE } else { 0 }
            | if m.exemplars { METRIC_FLAG_EXEMPLARS } else { 0 }
            | if m.native.is_some() { METRIC_FLAG_NATIVE } else { 0 };
        out.extend_from_slice(&[flags, 0]);
        out.extend_from_slice(&(m.labels.len() as u32).to_le_bytes());
        for (name, domain) in &m.labels {
            put_str(&mut out, name);
            match domain {
                Ok(values) => {
                    out.push(0);
                    out.extend_from_slice(&(values.len() as u32).to_le_bytes());
                    for v in values {
                        put_str(&mut out, v);
                    }
                }
                Err(capacity) => {
                    out.push(1);
                    out.extend_from_slice(&(*capacity as u32).to_le_bytes());
                }
            }
        }
        out.extend_from_slice(&(m.buckets.len() as u32).to_le_bytes());
        for b in m.buckets {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out.extend_from_slice(&(m.states.len() as u32).to_le_bytes());
        for s in m.states {
            put_str(&mut out, s);
        }
        out.extend_from_slice(&(m.offset as u64).to_le_bytes());
        out.extend_from_slice(&(m.series as u64).to_le_bytes());
        out.extend_from_slice(&(m.width as u32).to_le_bytes());
        if let Some(native) = m.native {
            out.extend_from_slice(&[native.schema() as u8, 0, 0, 0]);
            out.extend_from_slice(&native.max_buckets().to_le_bytes());
            out.extend_from_slice(&native::ZERO_THRESHOLD.to_le_bytes());
        }
    }
    out
}

/// Metric flag (first byte after the gauge mode): [`Descriptor::sparse`].
const METRIC_FLAG_SPARSE: u8 = 1;
/// Metric flag: [`Descriptor::exemplars`]; the series' exemplar slots
/// follow its others, within `width`.
const METRIC_FLAG_EXEMPLARS: u8 = 2;
/// Metric flag bit 2: a native histogram, whose parameters follow its
/// width.
const METRIC_FLAG_NATIVE: u8 = 4;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Counter => 0,
        Kind::Gauge => 1,
        Kind::Histogram => 2,
        Kind::Info => 3,
        Kind::StateSet => 4,
    }
}

const KINDS: [Kind; 5] = [Kind::Counter, Kind::Gauge, Kind::Histogram, Kind::Info, Kind::StateSet];

fn mode_code(mode: GaugeMode) -> u8 {
    GaugeMode::ALL.iter().position(|m| *m == mode).expect("every mode is listed") as u8
}

/// What the descriptors of a decoded schema point into: every string
/// and list, owned, so that a schema's memory goes when the schema does
/// (a long run meets a new archive schema at every compaction that sees
/// a new bounded label value, so nothing of a schema may be leaked).
///
/// The descriptors are handed out as `&'static` because `Descriptor` is
/// built for declared metrics, which live for ever. That is sound only
/// while the storage lives: the owner of the storage (the decoded
/// `Schema`) must outlive every descriptor taken from it, which the
/// readers ensure by holding the schema's `Arc` wherever they keep one.
#[derive(Default)]
pub(crate) struct SchemaStorage {
    strings: Vec<Box<str>>,
    lists: Vec<Box<[&'static str]>>,
    domains: Vec<Box<[LabelDomain]>>,
    floats: Vec<Box<[f64]>>,
    // Boxed: a descriptor must not move when the vector grows.
    #[allow(clippy::vec_box)]
    descriptors: Vec<Box<Descriptor>>,
}

/// Moves `value` into `store` and returns a reference to its heap copy,
/// which stays put while the storage lives (moving a `Box` does not move
/// what it points to).
fn keep<T: ?Sized>(store: &mut Vec<Box<T>>, value: Box<T>) -> &'static T {
    let at: *const T = &*value;
    store.push(value);
    // SAFETY: see `SchemaStorage`: valid while the storage lives.
    unsafe { &*at }
}

/// Reads a schema written by [`encode_schema`], checking every offset
/// against the slot count; what the entries point to is put in `store`.
pub(crate) fn decode_schema(
    bytes: &[u8],
    slots_count: u64,
    store: &mut SchemaStorage,
) -> Result<Vec<SchemaEntry>, ShardError> {
    let mut r = Reader { bytes, at: 0, store };
    let count = r.u32()? as usize;
    let mut entries = Vec::with_capacity(count.min(4096));
    for _ in 0..count {
        let name = r.str()?;
        let help = r.str()?;
        let unit = r.str()?;
        let kind = *KINDS.get(r.u8()? as usize).ok_or(ShardError::Schema)?;
        let mode = *GaugeMode::ALL.get(r.u8()? as usize).ok_or(ShardError::Schema)?;
        // Flags: readers ignore bits they do not know (an older reader
        // shows a sparse family's zero series, as before sparse families).
        let flags = r.take(2)?[0];
        let sparse = flags & METRIC_FLAG_SPARSE != 0;
        let exemplars = flags & METRIC_FLAG_EXEMPLARS != 0;
        let label_count = r.u32()? as usize;
        let mut names = Vec::with_capacity(label_count.min(16));
        let mut domains = Vec::with_capacity(label_count.min(16));
        let mut series = 1usize;
        for _ in 0..label_count {
            names.push(r.str()?);
            let domain = match r.u8()? {
                0 => {
                    let n = r.u32()? as usize;
                    let mut values = Vec::with_capacity(n.min(4096));
                    for _ in 0..n {
                        values.push(r.str()?);
                    }
                    LabelDomain::Values(keep(&mut r.store.lists, values.into_boxed_slice()))
                }
                1 => LabelDomain::Bounded { capacity: r.u32()? as usize },
                _ => return Err(ShardError::Schema),
            };
            series = series.checked_mul(domain.cardinality()).ok_or(ShardError::Schema)?;
            domains.push(domain);
        }
        let bucket_count = r.u32()? as usize;
        let mut buckets = Vec::with_capacity(bucket_count.min(4096));
        for _ in 0..bucket_count {
            buckets.push(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")));
        }
        let state_count = r.u32()? as usize;
        let mut states = Vec::with_capacity(state_count.min(4096));
        for _ in 0..state_count {
            states.push(r.str()?);
        }
        let offset = r.u64()? as usize;
        let declared_series = r.u64()? as usize;
        let width = r.u32()? as usize;
        let native = if flags & METRIC_FLAG_NATIVE != 0 { Some(r.native(kind)?) } else { None };
        let classic = kind.width(mode, buckets.len()) + native.map_or(0, NativeBuckets::width);
        let exemplar_slots = kind.exemplars(buckets.len()) * crate::exemplar::WIDTH;
        // Only counters and histograms keep exemplars.
        let expected_width = if exemplars && exemplar_slots > 0 { classic + exemplar_slots } else { classic };
        let valid_names = crate::descriptor::is_metric_name(name)
            && names.iter().all(|n| crate::descriptor::is_label_name(n))
            && buckets.windows(2).all(|w| w[0] < w[1])
            && buckets.iter().all(|b| b.is_finite());
        let slots = declared_series.checked_add(1).and_then(|s| s.checked_mul(width)).ok_or(ShardError::Schema)?;
        let fits = offset.checked_add(slots).is_some_and(|end| end as u64 <= slots_count);
        let exemplars_valid = !exemplars || exemplar_slots > 0;
        if declared_series != series || width != expected_width || !fits || !valid_names || !exemplars_valid {
            return Err(ShardError::Schema);
        }
        let desc = Descriptor {
            name,
            help,
            unit: (!unit.is_empty()).then_some(unit),
            kind,
            label_names: keep(&mut r.store.lists, names.into_boxed_slice()),
            label_domains: keep(&mut r.store.domains, domains.into_boxed_slice()),
            buckets: keep(&mut r.store.floats, buckets.into_boxed_slice()),
            states: keep(&mut r.store.lists, states.into_boxed_slice()),
            native,
            mode,
            sparse,
            exemplars,
            series,
            width,
            file: "",
            line: 0,
        };
        entries.push(SchemaEntry { desc: keep(&mut r.store.descriptors, Box::new(desc)), offset });
    }
    if r.at != bytes.len() {
        return Err(ShardError::Schema);
    }
    Ok(entries)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    store: &'a mut SchemaStorage,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ShardError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or(ShardError::Schema)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, ShardError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ShardError> {
        Ok(get_u32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64, ShardError> {
        Ok(get_u64(self.take(8)?, 0))
    }
    /// A native histogram's parameters, each checked: a schema of -4 to 8,
    /// zero reserved bytes, 1 to 4096 buckets, the zero threshold this
    /// version records with.
    fn native(&mut self, kind: Kind) -> Result<NativeBuckets, ShardError> {
        let head = self.take(4)?;
        let schema = head[0] as i8;
        let max_buckets = self.u32()?;
        let threshold = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        let valid = kind == Kind::Histogram
            && (native::MIN_SCHEMA..=native::MAX_SCHEMA).contains(&schema)
            && head[1..] == [0, 0, 0]
            && (1..=native::MAX_BUCKETS_LIMIT).contains(&max_buckets)
            && threshold.to_bits() == native::ZERO_THRESHOLD.to_bits();
        if !valid {
            return Err(ShardError::Schema);
        }
        Ok(NativeBuckets::new(schema, max_buckets))
    }

    fn str(&mut self) -> Result<&'static str, ShardError> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| ShardError::Schema)?;
        Ok(keep(&mut self.store.strings, s.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(name: &'a str, label: &'a str) -> MetricSpec<'a> {
        MetricSpec {
            name,
            help: "h",
            unit: None,
            kind: Kind::Counter,
            mode: GaugeMode::All,
            sparse: false,
            exemplars: false,
            labels: vec![(label, Ok(vec!["v"]))],
            buckets: &[],
            states: &[],
            offset: 0,
            series: 1,
            width: 2,
            native: None,
        }
    }

    /// Older readers keep reading files with legacy names; a file with
    /// any other name says it is version 3, and reads back.
    #[test]
    fn version_follows_the_names() {
        let (_, legacy) = encode_specs(&[spec("jobs", "queue")]);
        assert_eq!(legacy, VERSION_LEGACY_NAMES);
        for (name, label) in [("http.server.requests", "queue"), ("jobs", "http.route"), ("jobs", "a:b")] {
            let (schema, version) = encode_specs(&[spec("jobs", "queue"), spec(name, label)]);
            assert_eq!(version, VERSION_UTF8_NAMES, "{name} {label}");
            let mut store = SchemaStorage::default();
            let entries = decode_schema(&schema, 4, &mut store).unwrap();
            assert_eq!((entries[1].desc.name, entries[1].desc.label_names), (name, &[label][..]));
        }
        let header = Header::layout(0, 1, 2, 3, (&[], VERSION_UTF8_NAMES), 0, 0);
        assert_eq!(Header::decode(&header.encode(), 4096).unwrap().version, VERSION_UTF8_NAMES);
        let header = Header::layout(0, 1, 2, 3, (&[], VERSION), 0, 0);
        assert_eq!(Header::decode(&header.encode(), 4096).unwrap().version, VERSION);
        let mut newer = header.encode();
        newer[8] = (VERSION_NEWEST + 1) as u8;
        assert_eq!(Header::decode(&newer, 4096), Err(ShardError::Version));
    }

    /// A native histogram makes the file version 4; its parameters
    /// follow its width and read back, and every one is checked.
    #[test]
    fn native_parameters_read_back_and_are_checked() {
        let native = NativeBuckets::new(-2, 7);
        let mut h = spec("latency", "route");
        (h.kind, h.buckets, h.width, h.native) = (Kind::Histogram, &[1.0], 3 + native.width(), Some(native));
        let (schema, version) = encode_specs(&[spec("jobs", "queue"), h]);
        assert_eq!(version, VERSION);
        let slots = 4 + 2 * (3 + native.width()) as u64;
        let entries = decode_schema(&schema, slots, &mut SchemaStorage::default()).unwrap();
        assert_eq!((entries[1].desc.native, entries[1].desc.width), (Some(native), 3 + native.width()));
        assert_eq!(entries[0].desc.native, None);
        // The parameters are the schema's last 16 bytes.
        let at = schema.len() - 16;
        let corrupt = |i: usize, byte: u8| {
            let mut bad = schema.clone();
            bad[at + i] = byte;
            decode_schema(&bad, slots, &mut SchemaStorage::default()).err()
        };
        for (i, byte) in [(0, 9), (0, 0xfb), (1, 1), (4, 0), (5, 0x10), (15, 0x3f)] {
            assert_eq!(corrupt(i, byte), Some(ShardError::Schema), "byte {i} = {byte}");
        }
        // A width that does not count the native slots.
        let mut narrow = schema.clone();
        narrow[at - 4..at].copy_from_slice(&3u32.to_le_bytes());
        assert!(decode_schema(&narrow, slots, &mut SchemaStorage::default()).is_err());
        // Flag bit 2 on a counter.
        let (counter, _) = encode_specs(&[MetricSpec { native: Some(native), ..spec("jobs", "queue") }]);
        assert!(decode_schema(&counter, 4096, &mut SchemaStorage::default()).is_err());
    }

    /// A metric with exemplars makes the file version 4 and reads back
    /// with its flag; a width that does not count the exemplars, or the
    /// flag on a kind that keeps none, is a bad schema.
    #[test]
    fn exemplars_flag_width_and_version() {
        let width = 2 + crate::exemplar::WIDTH;
        let with = MetricSpec { exemplars: true, width, ..spec("jobs", "queue") };
        let (schema, version) = encode_specs(&[spec("other", "queue"), with]);
        assert_eq!(version, VERSION);
        let mut store = SchemaStorage::default();
        let entries = decode_schema(&schema, 2 * width as u64 + 4, &mut store).unwrap();
        assert!(entries[1].desc.exemplars && !entries[0].desc.exemplars);
        assert_eq!((entries[1].desc.width, entries[1].desc.exemplar_count()), (width, 1));
        let wrong = MetricSpec { exemplars: true, ..spec("jobs", "queue") };
        let (schema, _) = encode_specs(&[wrong]);
        assert_eq!(decode_schema(&schema, 1 << 20, &mut store).err(), Some(ShardError::Schema));
        let gauge = MetricSpec { exemplars: true, kind: Kind::Gauge, width: 1, ..spec("g", "queue") };
        let (schema, _) = encode_specs(&[gauge]);
        assert_eq!(decode_schema(&schema, 1 << 20, &mut store).err(), Some(ShardError::Schema));
        let header = Header::layout(0, 1, 2, 3, (&[], VERSION), 0, 0);
        assert_eq!(Header::decode(&header.encode(), 4096).unwrap().version, VERSION);
    }
}
