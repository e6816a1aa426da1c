//! Opening a shard for a scrape: header, cached schema, string log, slots,
//! liveness.

use core::sync::atomic::{AtomicU64, Ordering};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use crate::encode::plan::FamilyPlan;
use crate::gate::GateCell;
use crate::labels::{LabelDomain, OTHER};
use crate::shard::format::{self, FLAG_ARCHIVE, Header, SchemaEntry, ShardError};
use crate::shard::log::{self, ABSORBED_POSITION, DECLARED_POSITION};
use crate::shard::{OwnShard, file};

/// A decoded schema: its entries, a fingerprint of each metric's
/// definition (so identical metrics from different files merge slot by
/// slot) and each metric's rendering plan. It owns everything its
/// descriptors point to; see [`format::SchemaStorage`].
pub(crate) struct Schema {
    pub(crate) entries: Vec<SchemaEntry>,
    pub(crate) fingerprints: Vec<u64>,
    pub(crate) plans: Vec<FamilyPlan>,
    // Last: dropped after everything that points into it.
    _storage: format::SchemaStorage,
}

/// Schemas decoded, by checksum, length and slot count. Most shards share
/// a few schemas, so each is decoded once; entries are weak, so a schema
/// is freed when the last shard using it goes (an archive gets a new
/// schema whenever compaction meets a new bounded value: over a long run
/// that is an unbounded number of them).
type SchemaKey = (u64, u64, u64);
static SCHEMAS: GateCell<Option<HashMap<SchemaKey, Weak<Schema>>>> = GateCell::new(None);

fn schema(bytes: &[u8], header: &Header) -> Result<Arc<Schema>, ShardError> {
    if format::checksum(bytes) != header.schema_checksum {
        return Err(ShardError::Checksum);
    }
    let key = (header.schema_checksum, header.schema_len, header.slots_count);
    let cached = SCHEMAS.with(|cache| cache.as_ref().and_then(|c| c.get(&key)).and_then(Weak::upgrade));
    if let Some(schema) = cached {
        return Ok(schema);
    }
    // Decoded outside the gate: it allocates and may be large.
    let mut storage = format::SchemaStorage::default();
    let entries = format::decode_schema(bytes, header.slots_count, &mut storage)?;
    let fingerprints = entries.iter().map(|e| format::checksum(&format::encode_schema(&[(e.desc, 0)]).0)).collect();
    let plans = entries.iter().map(|e| FamilyPlan::new(e.desc)).collect();
    let decoded = Arc::new(Schema { entries, fingerprints, plans, _storage: storage });
    Ok(SCHEMAS.with(|cache| {
        let cache = cache.get_or_insert_with(HashMap::new);
        if let Some(raced) = cache.get(&key).and_then(Weak::upgrade) {
            return raced;
        }
        cache.insert(key, Arc::downgrade(&decoded));
        // Forget schemas no shard uses any more, in proportion to growth.
        if cache.len() > 64 && cache.len().is_power_of_two() {
            cache.retain(|_, weak| weak.strong_count() > 0);
        }
        decoded
    }))
}

/// How many distinct schemas are decoded and still in use (for tests).
pub(crate) fn schemas_in_use() -> usize {
    SCHEMAS.with(|cache| cache.as_ref().map_or(0, |c| c.values().filter(|w| w.strong_count() > 0).count()))
}

/// Parses a shard from bytes in memory (for fuzzing): header, schema and
/// string log, with every slot range checked, and native histograms'
/// counts read from whatever their slots hold.
pub(crate) fn parse_bytes(bytes: &[u8]) -> Result<usize, ShardError> {
    // Slots are read as 8-byte atomics, so parse an aligned copy.
    let mut words = vec![0u64; bytes.len().div_ceil(8)].into_boxed_slice();
    // SAFETY: the words buffer holds at least bytes.len() bytes.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr() as *mut u8, bytes.len()) };
    let shard = Shard::parse(String::new(), Bytes::Copied(words, bytes.len()), false)?;
    let mut total = 0u64;
    for entry in &shard.schema.entries {
        let slots = shard.slots(entry);
        for slot in slots {
            total = total.wrapping_add(slot.load(Ordering::Relaxed));
        }
        // Native counts are read from any slot values a file holds.
        let desc = entry.desc;
        if desc.native.is_some() {
            for series in 0..=desc.series {
                let series_slots = &slots[series * desc.width..(series + 1) * desc.width];
                let Some(counts) = crate::native::NativeCounts::of_series(desc, series_slots) else { continue };
                let counts = counts.limited();
                total = total.wrapping_add(counts.total());
                total = total.wrapping_add(crate::native::NativeCounts::spans(&counts.negative).1.len() as u64);
            }
        }
        // Exemplars are read from hostile bytes too.
        for series in 0..entry.desc.series {
            for which in 0..entry.desc.exemplar_count() {
                let exemplar = crate::encode::plan::exemplar_at(entry.desc, slots, series, which);
                total = total.wrapping_add(exemplar.map_or(0, |e| e.nanos));
            }
        }
    }
    Ok(total as usize)
}

/// The bytes of a shard: a read-only mapping of another process's file,
/// or this process's own mapping.
enum Bytes {
    /// Another process's file; the guard (dropped first) covers the map.
    Mapped(Option<crate::shard::guard::Guarded>, memmap2::Mmap),
    Own(&'static [u8]),
    /// An 8-aligned copy of that many bytes (fuzzing).
    Copied(Box<[u64]>, usize),
}

impl Bytes {
    fn raw(&self) -> &[u8] {
        match self {
            Bytes::Mapped(_, m) => m,
            Bytes::Own(b) => b,
            // SAFETY: the words hold at least `len` initialised bytes.
            Bytes::Copied(words, len) => unsafe { core::slice::from_raw_parts(words.as_ptr() as *const u8, *len) },
        }
    }
}

/// What a shard's string log says.
#[derive(Default)]
struct LogView {
    /// Bytes of records parsed.
    used: u64,
    /// (metric, label position, index) → value.
    bounded: HashMap<(u32, u16, u32), String>,
    /// Shard files an archive has absorbed.
    absorbed: HashSet<String>,
    /// Metric → ranges `(first, count)` of series shown at zero, sorted.
    declared: HashMap<u32, Vec<(u32, u32)>>,
}

/// One shard, ready to merge.
#[derive(Clone)]
pub(crate) struct Shard {
    pub(crate) name: String,
    pub(crate) pid: u32,
    /// A live process holds it; false for dead workers and the archive.
    pub(crate) live: bool,
    pub(crate) archive: bool,
    pub(crate) schema: Arc<Schema>,
    log: Arc<LogView>,
    bytes: Arc<Bytes>,
    header: Header,
}

impl Shard {
    /// When the shard's run started (Unix nanoseconds): see
    /// [`Header::run_started`].
    pub(crate) fn run_started(&self) -> u64 {
        self.header.run_started()
    }

    /// Reads this process's own shard through its mapping (never by name:
    /// closing a descriptor of it would drop our liveness lock).
    pub(crate) fn own(own: &'static OwnShard) -> Result<Shard, ShardError> {
        Self::parse(own.file_name(), Bytes::Own(own.bytes()), true)
    }

    /// Reads the shard another promshard version of this process maps.
    pub(crate) fn sibling(path: &Path, bytes: &'static [u8]) -> Result<Shard, ShardError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Self::parse(name, Bytes::Own(bytes), true)
    }

    /// Opens another process's shard (or the archive).
    pub(crate) fn open(path: &Path) -> Result<Shard, ShardError> {
        Self::open_file(path).map(|(shard, _)| shard)
    }

    fn open_file(path: &Path) -> Result<(Shard, std::fs::File), ShardError> {
        // Mapped and parsed with nothing locked: a large file takes time.
        let file = file::open_for_read(path)?;
        let len = file.metadata().map_err(|_| ShardError::Io)?.len();
        if len < format::HEADER_LEN as u64 {
            let mut head = [0u8; 16];
            let n = std::io::Read::read(&mut &file, &mut head).unwrap_or(0);
            return Err(Header::decode(&head[..n], len).err().unwrap_or(ShardError::Truncated));
        }
        // SAFETY: a read-only shared mapping. The writer only changes slots
        // (read atomically) and the log past its published length.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.map_err(|_| ShardError::Io)?;
        let guard = crate::shard::guard::Guarded::new(map.as_ptr(), map.len());
        let live = file::holder(&file).map_err(|_| ShardError::Io)?.is_some();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let shard = Self::parse(name, Bytes::Mapped(guard, map), live)?;
        if shard.damaged() {
            return Err(ShardError::Truncated);
        }
        Ok((shard, file))
    }

    fn parse(name: String, bytes: Bytes, live: bool) -> Result<Shard, ShardError> {
        let raw = bytes.raw();
        let header = Header::decode(&raw[..format::HEADER_LEN.min(raw.len())], raw.len() as u64)?;
        let schema_bytes = &raw[header.schema_offset as usize..(header.schema_offset + header.schema_len) as usize];
        let schema = schema(schema_bytes, &header)?;
        let archive = header.flags & FLAG_ARCHIVE != 0;
        let mut shard = Shard {
            name,
            pid: header.pid,
            live: live && !archive,
            archive,
            schema,
            log: Arc::new(LogView::default()),
            header,
            bytes: Arc::new(bytes),
        };
        shard.refresh_log();
        Ok(shard)
    }

    fn log_region(&self) -> (&[u8], u64) {
        let h = &self.header;
        let strings = &self.bytes.raw()[h.strings_offset as usize..(h.strings_offset + h.strings_len) as usize];
        let used = if strings.len() >= 8 {
            // SAFETY: 8-aligned (checked by Header::decode) and in bounds.
            unsafe { &*(strings.as_ptr() as *const AtomicU64) }.load(Ordering::Acquire)
        } else {
            0
        };
        (strings, used)
    }

    /// Re-reads the string log if the writer has appended to it.
    fn refresh_log(&mut self) {
        let (strings, used) = self.log_region();
        if used == self.log.used && used != 0 {
            return;
        }
        let mut view = LogView { used, ..LogView::default() };
        for record in log::read(strings, used) {
            let text = || String::from_utf8(record.payload.to_vec()).ok();
            match record.position {
                ABSORBED_POSITION => view.absorbed.extend(text()),
                DECLARED_POSITION => {
                    if let Ok(count) = <[u8; 4]>::try_from(record.payload) {
                        let range = (record.index, u32::from_le_bytes(count));
                        view.declared.entry(record.metric).or_default().push(range);
                    }
                }
                position => {
                    if let Some(value) = text() {
                        view.bounded.insert((record.metric, position, record.index), value);
                    }
                }
            }
        }
        view.declared.values_mut().for_each(crate::encode::plan::normalize_ranges);
        self.log = Arc::new(view);
    }

    /// Whether the file shrank under its mapping while it was read: what
    /// was read from it may be zeros, so it must not be used.
    pub(crate) fn damaged(&self) -> bool {
        matches!(&*self.bytes, Bytes::Mapped(Some(guard), _) if guard.damaged())
    }

    /// The slots of schema entry `entry`.
    pub(crate) fn slots(&self, entry: &SchemaEntry) -> &[AtomicU64] {
        let start = self.header.slots_offset as usize + entry.offset * 8;
        let count = entry.desc.slots();
        // SAFETY: decode_schema checked offset + slots <= slots_count, and
        // Header::decode checked the slots fit the file; 8-aligned.
        unsafe { core::slice::from_raw_parts(self.bytes.raw().as_ptr().add(start) as *const AtomicU64, count) }
    }

    /// An info metric's current label pairs, from its slots.
    pub(crate) fn info(&self, metric: usize) -> Option<Vec<(String, String)>> {
        crate::info_slots::read_pairs(self.slots(self.schema.entries.get(metric)?))
    }

    /// Whether this archive already holds the values of shard `name`.
    pub(crate) fn absorbed(&self, name: &str) -> bool {
        self.log.absorbed.contains(name)
    }

    /// The shard files an archive has absorbed.
    pub(crate) fn absorbed_names(&self) -> impl Iterator<Item = &str> {
        self.log.absorbed.iter().map(String::as_str)
    }

    /// Whether the writer declared series `series` of metric `metric`
    /// shown at zero (sparse metrics only).
    pub(crate) fn declared(&self, metric: usize, series: usize) -> bool {
        crate::encode::plan::in_ranges(self.declared_ranges(metric), series)
    }

    /// The declared ranges of metric `metric`.
    pub(crate) fn declared_ranges(&self, metric: usize) -> &[(u32, u32)] {
        self.log.declared.get(&(metric as u32)).map_or(&[], Vec::as_slice)
    }

    /// The text of a bounded label's value: from the string log, or
    /// `other` for the overflow index (never logged: every process has it).
    pub(crate) fn bounded_value(&self, metric: usize, position: usize, index: usize) -> Option<&str> {
        let domain = self.schema.entries.get(metric)?.desc.label_domains.get(position)?;
        if matches!(domain, LabelDomain::Bounded { capacity } if *capacity == index) {
            return Some(OTHER);
        }
        self.log.bounded.get(&(metric as u32, position as u16, index as u32)).map(String::as_str)
    }
}

/// Shards other processes wrote, kept mapped between scrapes: a scrape
/// then costs a `stat` and a lock query per live file, not an open, a map
/// and a parse.
///
/// The cache is a process-wide table under the gate, but no scrape holds
/// the gate while it works: a scrape takes the whole cache out, works on
/// it with nothing locked, and puts it back. A scrape that finds it out
/// waits for it (see [`ShardCache::take`]); a fork mid-scrape gives the
/// child an empty one.
#[derive(Default)]
pub(crate) struct ShardCache {
    /// Marks the cache out with this thread until it is put back, or
    /// dropped by a scrape that panicked. `None` for a cache of one scrape
    /// only, dropped instead of put back (see [`ShardCache::take`]).
    out: Option<Out>,
    entries: BTreeMap<PathBuf, Cached>,
    /// The listings of the last few directories read, most recent first.
    listings: Vec<CachedListing>,
    /// What the Python files of the last few directories read came to,
    /// most recent first.
    python: Vec<super::python::PyCache>,
    /// This process's own shard, parsed (its schema never changes; a
    /// forked child's file has another name, so it parses afresh).
    own: Option<Shard>,
    /// This process's pid and its `/proc/<pid>/stat`, kept open by the
    /// process metrics ([`crate::process`]).
    own_stat: (u32, Option<KeptFile>),
    /// Problems met while reusing cached shards, for the scrape to report.
    pub(crate) problems: Vec<(PathBuf, ShardError)>,
}

/// How many directories a process keeps listings and Python state for: a
/// reader usually reads one; a few read in turn each keep theirs.
const KEPT_DIRS: usize = 4;

/// A directory listing, reused while the directory's mtime is unchanged.
struct CachedListing {
    dir: PathBuf,
    own_name: Option<String>,
    mtime: (i64, i64),
    /// Old enough to be reused on an unchanged mtime.
    settled: bool,
    files: file::Listing,
}

struct Cached {
    identity: file::Identity,
    /// Kept open to ask about the lock cheaply, while descriptors are
    /// plentiful; without it the file is opened for each question.
    file: Option<KeptFile>,
    /// The shard's process's `/proc/<pid>/stat` and `/proc/<pid>/fd`,
    /// kept open by the process metrics ([`crate::process`]) while the
    /// shard is live and descriptors are plentiful.
    stat: Option<KeptFile>,
    fds: Option<KeptFile>,
    shard: Shard,
}

/// What a scrape's cache keeps open for one live shard, lent to the
/// reader of its process's `/proc` files.
pub(crate) struct KeptFor<'a> {
    /// The shard file, to ask about its lock; `None` when the budget had
    /// no room for it.
    pub(crate) shard: Option<&'a std::fs::File>,
    /// Places to keep the process's `stat` file and `fd` directory open
    /// until the shard is found dead or gone.
    pub(crate) stat: &'a mut Option<KeptFile>,
    pub(crate) fds: &'a mut Option<KeptFile>,
}

/// Files found unusable, so each is counted and logged once, not at every
/// scrape; pruned to the files still listed.
static BAD: GateCell<BTreeMap<PathBuf, (file::Identity, ShardError)>> = GateCell::new(BTreeMap::new());

static CACHE: GateCell<Option<ShardCache>> = GateCell::new(None);

/// The process and thread that have [`CACHE`]'s value out for a scrape.
static HOLDER: GateCell<Option<(u32, std::thread::ThreadId)>> = GateCell::new(None);

/// How long a scrape sleeps between looks at a cache another thread has out.
const CACHE_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// How long a scrape waits for a cache another thread has out. A scrape
/// takes milliseconds; one that holds the cache longer is stuck (a file
/// on a hung network mount, a thread stopped in a debugger), and must not
/// hang every other scrape of the process with it.
const CACHE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The mark of a cache taken out: clears [`HOLDER`] when dropped, so a
/// scrape that panics (and the thread that caught it) leaves no one
/// waiting. The cache it was out with is lost, as a forked child's is.
/// While it lives the thread logs nothing (see [`crate::gate::take_out`]):
/// a `log` backend that waited for a thread waiting for the cache would
/// never return.
struct Out((u32, std::thread::ThreadId));

impl Out {
    fn new(holder: (u32, std::thread::ThreadId)) -> Out {
        crate::gate::take_out();
        Out(holder)
    }
}

impl Drop for Out {
    fn drop(&mut self) {
        HOLDER.with(|holder| {
            if *holder == Some(self.0) {
                *holder = None;
            }
        });
        crate::gate::give_back();
    }
}

impl ShardCache {
    /// Takes the process's cache out for one scrape. While another thread
    /// of this process has it out, waits for it to come back: what a
    /// scrape learns of a directory (which Python run is the current one,
    /// that its writers can be proven dead, each dead file's counts) must
    /// reach the scrapes after it, and a scrape that began from an empty
    /// cache and put it back last made every later one forget it (a
    /// previous run's counts came back). A forked child (its parent's
    /// scraping thread does not exist in it) takes it as it is: empty.
    ///
    /// A thread that already has it out (a scrape within a scrape), and a
    /// scrape that waited [`CACHE_WAIT`] in vain, get an empty cache of
    /// their own, which is dropped instead of put back: that scrape reads
    /// the directory afresh, and the scrapes after it still find what the
    /// cache knew.
    pub(crate) fn take() -> ShardCache {
        let me = (std::process::id(), std::thread::current().id());
        let start = std::time::Instant::now();
        loop {
            let taken = HOLDER.with(|holder| match *holder {
                Some((pid, thread)) if pid == me.0 && thread == me.1 => Some(None),
                Some((pid, _)) if pid == me.0 => None,
                _ => {
                    *holder = Some(me);
                    Some(Some(CACHE.with(Option::take).unwrap_or_default()))
                }
            });
            match taken {
                Some(Some(mut cache)) => {
                    cache.out = Some(Out::new(me));
                    return cache;
                }
                Some(None) => return ShardCache::default(),
                None if start.elapsed() >= CACHE_WAIT => return ShardCache::default(),
                None => std::thread::sleep(CACHE_POLL),
            }
        }
    }

    /// Puts the cache back after a scrape (a cache of one scrape only is
    /// dropped).
    pub(crate) fn put_back(mut self) {
        let Some(out) = self.out.take() else { return };
        CACHE.with(|cache| *cache = Some(self));
        drop(out);
    }

    /// This process's own shard, read through its mapping (never by name:
    /// closing a descriptor of it would drop our liveness lock).
    pub(crate) fn own(&mut self, own: &'static OwnShard) -> Result<Shard, ShardError> {
        let name = own.file_name();
        match self.own.as_mut().filter(|s| s.name == name) {
            Some(shard) => shard.refresh_log(),
            None => self.own = Some(Shard::own(own)?),
        }
        Ok(self.own.clone().expect("just set"))
    }

    /// The shard at `path`, reusing the mapping when the file is the same
    /// one (same device and inode) as last time.
    pub(crate) fn open(&mut self, path: &Path) -> Result<Shard, ShardError> {
        let meta = std::fs::symlink_metadata(path).map_err(|_| ShardError::Io)?;
        let identity = file::identity(&meta);
        if let Some(cached) = self.entries.get_mut(path).filter(|c| c.identity == identity) {
            if cached.shard.live {
                // Dead stays dead: only a live shard's lock can change.
                let asked = match &cached.file {
                    Some(kept) => file::holder(&kept.0).map(|h| h.is_some()).map_err(|_| ShardError::Io),
                    // Kept from now on if the budget has room again.
                    None => held_by_someone(path, identity).map(|(live, file)| {
                        cached.file = live.then(|| KeptFile::keep(file)).flatten();
                        live
                    }),
                };
                // Unable to ask (out of descriptors): keep what was known,
                // say so, and never call a live process dead for it.
                let live = asked.unwrap_or_else(|e| {
                    self.problems.push((path.to_owned(), e));
                    true
                });
                cached.shard.live = live;
                if !live {
                    cached.file = None;
                    cached.stat = None;
                    cached.fds = None;
                }
            }
            cached.shard.refresh_log();
            return Ok(cached.shard.clone());
        }
        self.entries.remove(path);
        let (shard, file) = Shard::open_file(path)?;
        let file = (shard.live && KeptFile::reserve()).then(|| KeptFile(file));
        self.entries.insert(path.to_owned(), Cached { identity, file, stat: None, fds: None, shard: shard.clone() });
        Ok(shard)
    }

    /// A place to keep this process's own `stat` file open, emptied in a
    /// forked child (the descriptor it inherited reads its parent).
    pub(crate) fn own_stat(&mut self) -> &mut Option<KeptFile> {
        let pid = std::process::id();
        if self.own_stat.0 != pid {
            self.own_stat = (pid, None);
        }
        &mut self.own_stat.1
    }

    /// The descriptors kept for `shard`, read from `path` by this scrape,
    /// if it is live and still the one cached there (the same mapping, so
    /// the same file and the same pid).
    pub(crate) fn kept(&mut self, path: &Path, shard: &Shard) -> Option<KeptFor<'_>> {
        let cached = self.entries.get_mut(path)?;
        if !cached.shard.live || !Arc::ptr_eq(&cached.shard.bytes, &shard.bytes) {
            return None;
        }
        Some(KeptFor { shard: cached.file.as_ref().map(|kept| &kept.0), stat: &mut cached.stat, fds: &mut cached.fds })
    }

    /// The files of `dir` (without `own_name`). A directory that saw
    /// thousands of workers come and go stays large on some file systems
    /// (ext4 never shrinks one), so its listing is kept while the
    /// directory's mtime stays the same. Timestamps can be coarse (a clock
    /// tick), so a listing is only kept once its mtime is a second old:
    /// any later change then moves the mtime forward.
    /// Returns whether the listing is new (not the one kept from an
    /// earlier scrape).
    pub(crate) fn list(&mut self, dir: &Path, own_name: Option<&str>) -> std::io::Result<(file::Listing, bool)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir)?;
        let mtime = (meta.mtime(), meta.mtime_nsec());
        let reusable =
            |l: &&CachedListing| l.settled && l.dir == dir && l.mtime == mtime && l.own_name.as_deref() == own_name;
        if let Some(listing) = self.listings.iter().find(reusable) {
            return Ok((listing.files.clone(), false));
        }
        let files = file::list_all(dir, own_name)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.listings.retain(|l| l.dir != dir);
        self.listings.truncate(KEPT_DIRS - 1);
        self.listings.insert(
            0,
            CachedListing {
                dir: dir.to_owned(),
                own_name: own_name.map(str::to_owned),
                mtime,
                settled: now > mtime.0 + 1,
                files: files.clone(),
            },
        );
        Ok((files, true))
    }

    /// What the Python files of `dir` came to so far (empty if unknown),
    /// taken out for a scrape; [`put_python`](Self::put_python) returns it.
    pub(crate) fn take_python(&mut self, dir: &Path) -> super::python::PyCache {
        match self.python.iter().position(|p| p.dir() == dir) {
            Some(at) => self.python.remove(at),
            None => super::python::PyCache::default(),
        }
    }

    /// Keeps what a scrape learnt of a directory's Python files, for the
    /// next scrape of that directory.
    pub(crate) fn put_python(&mut self, python: super::python::PyCache) {
        self.python.truncate(KEPT_DIRS - 1);
        self.python.insert(0, python);
    }

    /// What `dir` held when it could last be listed, for a scrape that
    /// cannot list it now (out of descriptors): the last listing, else the
    /// files still mapped from it. Never an empty directory by mistake.
    pub(crate) fn last_listing(&self, dir: &Path) -> file::Listing {
        match self.listings.iter().find(|l| l.dir == dir) {
            Some(listing) => listing.files.clone(),
            None => file::Listing {
                shards: self.entries.keys().filter(|p| p.parent() == Some(dir)).cloned().collect(),
                ..file::Listing::default()
            },
        }
    }

    /// Forgets one file, to open it afresh next time.
    pub(crate) fn forget(&mut self, path: &Path) {
        self.entries.remove(path);
    }

    /// Forgets files that were not in the last listing.
    /// Forgets the files of `dir` that were not in its last listing
    /// (files of other directories read by this process stay).
    pub(crate) fn retain(&mut self, dir: &Path, seen: &HashSet<PathBuf>) {
        self.entries.retain(|path, _| path.parent() != Some(dir) || seen.contains(path));
        BAD.with(|bad| bad.retain(|path, _| path.parent() != Some(dir) || seen.contains(path)));
    }

    /// Whether `path` is newly found unusable for `error`: a file is
    /// counted and logged once per problem, however many scrapes meet it
    /// (concurrent ones included: this table is not taken out with the
    /// cache).
    pub(crate) fn newly_bad(&mut self, path: &Path, error: ShardError) -> bool {
        let identity = std::fs::symlink_metadata(path).map(|m| file::identity(&m)).unwrap_or_default();
        BAD.with(|bad| bad.insert(path.to_owned(), (identity, error)) != Some((identity, error)))
    }
}

/// Whether a process holds the lock of the file at `path`, asked through a
/// descriptor opened for the question (and handed back). Out of
/// descriptors, that is an error the scrape reports, never a silent
/// "dead".
fn held_by_someone(path: &Path, identity: file::Identity) -> Result<(bool, std::fs::File), ShardError> {
    let file = file::open_for_read(path)?;
    let meta = file.metadata().map_err(|_| ShardError::Io)?;
    if file::identity(&meta) != identity {
        return Err(ShardError::Io);
    }
    let live = file::holder(&file).map_err(|_| ShardError::Io)?.is_some();
    Ok((live, file))
}

/// A descriptor kept open between scrapes (a shard's, its process's
/// `stat` file, or a live Python writer's `.db` file), counted
/// process-wide (concurrent scrapes each have a cache, and all of them
/// together keep within the budget).
pub(crate) struct KeptFile(pub(crate) std::fs::File);

static KEPT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

impl KeptFile {
    /// Takes a place in the budget, if one is free.
    pub(crate) fn reserve() -> bool {
        let budget = descriptor_budget();
        KEPT.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| (n < budget).then_some(n + 1)).is_ok()
    }

    /// Keeps `file` if the budget has room; else `None`, and it is closed.
    pub(crate) fn keep(file: std::fs::File) -> Option<KeptFile> {
        Self::reserve().then(|| KeptFile(file))
    }

    pub(crate) fn file(&self) -> &std::fs::File {
        &self.0
    }
}

impl Drop for KeptFile {
    fn drop(&mut self) {
        KEPT.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How many descriptors the process's scrapes may keep open between
/// scrapes: a quarter of its limit, so the application keeps the rest.
fn descriptor_budget() -> usize {
    // SAFETY: getrlimit with a valid struct.
    let mut limit: libc::rlimit = unsafe { core::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    (limit.rlim_cur as usize / 4).min(4096)
}

/// The wait for a cache another thread has out is bounded, and what the
/// scrape that gave up on it does cannot overwrite the cache.
#[cfg(test)]
mod cache_tests {
    use super::{CACHE, CACHE_WAIT, ShardCache};
    use std::time::{Duration, Instant};

    #[test]
    fn a_cache_held_too_long_is_waited_for_a_bounded_time_and_never_overwritten() {
        let held = ShardCache::take();
        assert!(held.out.is_some(), "the first taker has the process's cache");
        // A scrape within a scrape: at once, a cache of its own.
        let started = Instant::now();
        let nested = ShardCache::take();
        assert!(nested.out.is_none() && started.elapsed() < Duration::from_secs(1));
        nested.put_back();
        // Another thread, as a scrape stuck in a read would make it wait.
        let waiter = std::thread::spawn(|| {
            let started = Instant::now();
            let cache = ShardCache::take();
            let (waited, own) = (started.elapsed(), cache.out.is_none());
            cache.put_back();
            (waited, own)
        });
        let (waited, own) = waiter.join().unwrap();
        assert!(own, "the waiter got a cache of its own");
        assert!(waited >= CACHE_WAIT && waited < CACHE_WAIT + Duration::from_secs(3), "waited {waited:?}");
        assert!(CACHE.with(|c| c.is_none()), "neither put back a cache over the one still out");
        held.put_back();
        assert!(CACHE.with(|c| c.is_some()));
        // Back: the next scrape, on any thread, takes it at once.
        let next = std::thread::spawn(|| {
            let started = Instant::now();
            let cache = ShardCache::take();
            let taken = cache.out.is_some() && started.elapsed() < Duration::from_secs(1);
            cache.put_back();
            taken
        });
        assert!(next.join().unwrap());
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;
    use crate::descriptor::{Descriptor, GaugeMode, Kind, Opts};
    use crate::labels::LabelDomain;
    use crate::shard::format::{self, HEADER_LEN, Header};

    /// A small but complete shard image: every kind, a bounded label,
    /// exemplars (format version 4).
    fn image() -> (Vec<u8>, Vec<u8>) {
        static DESCS: std::sync::OnceLock<Vec<Descriptor>> = std::sync::OnceLock::new();
        let descs = DESCS.get_or_init(|| {
            let list: &'static [LabelDomain] =
                &[LabelDomain::Values(&["a", "b"]), LabelDomain::Bounded { capacity: 2 }];
            vec![
                Descriptor::new(Opts::new("c_total", "C.").labels(&["x", "y"]), Kind::Counter, list, 6, &[]),
                Descriptor::new(Opts::new("g", "G.").mode(GaugeMode::MostRecent), Kind::Gauge, &[], 1, &[]),
                Descriptor::new(Opts::new("h", "H.").buckets(&[1.0, 2.0]), Kind::Histogram, &[], 1, &[]),
                Descriptor::new(Opts::new("s", "S."), Kind::StateSet, &[], 1, &["on", "off"]),
                Descriptor::new(Opts::new("e_total", "E.").exemplars(), Kind::Counter, &[], 1, &[]),
                Descriptor::new(Opts::new("eh", "EH.").buckets(&[1.0]).exemplars(), Kind::Histogram, &[], 1, &[]),
            ]
        });
        let mut offset = 0;
        let metrics: Vec<(&Descriptor, usize)> = descs
            .iter()
            .map(|d| {
                let at = offset;
                offset += d.slots();
                (d, at)
            })
            .collect();
        let schema = format::encode_schema(&metrics);
        let header = Header::layout(0, 1, 2, 3, (&schema.0, schema.1), 64, offset);
        let schema = schema.0;
        let (strings_offset, slots_offset) = (header.strings_offset as usize, header.slots_offset as usize);
        let mut bytes = header.encode().to_vec();
        bytes.extend_from_slice(&schema);
        bytes.resize(strings_offset, 0);
        // One logged bounded value: "/x" for metric 0, label 1, index 0.
        let mut record = vec![0u8; 24];
        record[0..4].copy_from_slice(&24u32.to_le_bytes());
        record[8..10].copy_from_slice(&1u16.to_le_bytes());
        record[16..20].copy_from_slice(&2u32.to_le_bytes());
        record[20..22].copy_from_slice(b"/x");
        bytes.extend_from_slice(&24u64.to_le_bytes());
        bytes.extend_from_slice(&record);
        bytes.resize(slots_offset + offset * 8, 7);
        // A whole exemplar in `e_total`'s only series, after its two
        // counts (the other exemplars hold the filler: odd, never whole).
        let exemplar =
            crate::exemplar::Exemplar { labels: vec![("trace_id".into(), "ab".into())], value: 1.0, nanos: 9 };
        let at = slots_offset + (metrics[4].1 + 2) * 8;
        for (i, word) in crate::exemplar_slots::words(&exemplar).iter().enumerate() {
            bytes[at + i * 8..at + i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        (bytes, schema)
    }

    #[test]
    fn a_valid_image_parses() {
        let (bytes, _) = image();
        assert!(parse_bytes(&bytes).is_ok());
    }

    #[test]
    fn truncations_and_byte_flips_never_panic() {
        let (bytes, schema) = image();
        for len in 0..bytes.len() {
            let _ = parse_bytes(&bytes[..len]);
        }
        for at in 0..bytes.len() {
            for bit in [0x01u8, 0x80, 0xff] {
                let mut mutated = bytes.clone();
                mutated[at] ^= bit;
                let _ = parse_bytes(&mutated);
            }
        }
        // Past the checksum, the schema decoder sees the damage itself.
        for at in 0..schema.len() {
            for bit in [0x01u8, 0x10, 0xff] {
                let mut mutated = schema.clone();
                mutated[at] ^= bit;
                let _ = format::decode_schema(&mutated, 1 << 20, &mut Default::default());
                let _ = format::decode_schema(&mutated[..at], 1 << 20, &mut Default::default());
            }
        }
    }

    #[test]
    fn refusals_name_their_reason() {
        use format::ShardError::*;
        let (bytes, _) = image();
        assert_eq!(parse_bytes(&[]).err(), Some(Truncated), "an empty file may be one being created");
        assert_eq!(parse_bytes(b"hello world, not a shard at all").err(), Some(Foreign));
        assert_eq!(parse_bytes(&bytes[..HEADER_LEN - 1]).err(), Some(Truncated));
        assert_eq!(parse_bytes(&bytes[..bytes.len() - 1]).err(), Some(Truncated));
        let mut future = bytes.clone();
        future[8] = 99;
        assert_eq!(parse_bytes(&future).err(), Some(Version));
        let mut corrupt = bytes.clone();
        corrupt[30] ^= 1;
        assert_eq!(parse_bytes(&corrupt).err(), Some(Checksum));
        let mut schema = bytes.clone();
        schema[HEADER_LEN + 6] ^= 1;
        assert_eq!(parse_bytes(&schema).err(), Some(Checksum));
    }
}
