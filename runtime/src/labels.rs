//! Label values and the domains of labels: what values a label can take.
//! How values compose into a series index is `label_set`.

/// A label value drawn from a fixed set, such as a fieldless enum.
///
/// `VALUES` lists the text of every value; `index` maps a value to its
/// position in `VALUES`. The number of values is the label's cardinality.
///
/// `#[derive(LabelValue)]` writes this for fieldless enums; by hand it
/// looks like this:
///
/// ```
/// use promshard::LabelValue;
///
/// #[derive(Clone, Copy)]
/// enum Method { Get, Post }
///
/// impl LabelValue for Method {
///     const VALUES: &'static [&'static str] = &["get", "post"];
///     fn index(self) -> usize {
///         self as usize
///     }
/// }
///
/// assert_eq!(Method::CARDINALITY, 2);
/// assert_eq!(Method::Post.as_str(), "post");
/// ```
///
/// An `index` outside `0..CARDINALITY` is not undefined behaviour: the
/// recording lands in a per-metric discard slot that is never exposed.
pub trait LabelValue: Copy {
    /// The text of every value, in index order.
    const VALUES: &'static [&'static str];
    /// How many distinct values this label can take.
    const CARDINALITY: usize = Self::VALUES.len();
    /// This value's position in [`VALUES`](Self::VALUES).
    fn index(self) -> usize;
    /// This value's text.
    fn as_str(self) -> &'static str {
        Self::VALUES.get(self.index()).copied().unwrap_or("")
    }
}

impl LabelValue for bool {
    const VALUES: &'static [&'static str] = &["false", "true"];
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// The values one label can take, as the exposition sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelDomain {
    /// A fixed list, in index order.
    Values(&'static [&'static str]),
    /// Up to `capacity` distinct strings per process, kept in the order
    /// they were first seen; index `capacity` is the value `other`, where
    /// every later string is counted.
    Bounded {
        /// How many distinct strings are kept.
        capacity: usize,
    },
}

impl LabelDomain {
    /// How many distinct index values the label has.
    pub const fn cardinality(self) -> usize {
        match self {
            LabelDomain::Values(values) => values.len(),
            LabelDomain::Bounded { capacity } => capacity + 1,
        }
    }
}

/// The label value text that bounded labels fold overflow into.
pub const OTHER: &str = "other";
