//! Label values with a fixed, known set of values, and their composition
//! into label sets.
//!
//! Every series of a metric gets a dense index in `0..CARDINALITY`, computed
//! by arithmetic on the label values (mixed radix over a tuple), so recording
//! never hashes and never allocates.

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

/// The labels of one metric, as a tuple of [`LabelValue`]s: `()` for an
/// unlabelled metric, `(A,)`, `(A, B)` and so on up to eight labels.
///
/// A label set has `A::CARDINALITY * B::CARDINALITY * …` series; `index`
/// numbers them densely in declaration order (the last label varies
/// fastest), which is also the order of the exposition.
pub trait LabelSet: Copy {
    /// How many series the label set can produce.
    const CARDINALITY: usize;
    /// The value texts of every label, one slice per label, in order.
    const VALUE_SETS: &'static [&'static [&'static str]];
    /// This label combination's dense index in `0..CARDINALITY`.
    fn index(self) -> usize;
}

impl LabelSet for () {
    const CARDINALITY: usize = 1;
    const VALUE_SETS: &'static [&'static [&'static str]] = &[];
    #[inline(always)]
    fn index(self) -> usize {
        0
    }
}

macro_rules! tuple_label_set {
    ($($name:ident)+) => {
        impl<$($name: LabelValue),+> LabelSet for ($($name,)+) {
            const CARDINALITY: usize = 1 $(* $name::CARDINALITY)+;
            const VALUE_SETS: &'static [&'static [&'static str]] = &[$($name::VALUES),+];
            #[inline(always)]
            #[allow(non_snake_case)]
            fn index(self) -> usize {
                let ($($name,)+) = self;
                let mut index = 0;
                // Mixed radix: each label scales the index by its own
                // cardinality, so the last label varies fastest. An
                // out-of-range component is clamped to the discard index.
                $(
                    let component = $name.index();
                    if component >= $name::CARDINALITY {
                        return Self::CARDINALITY;
                    }
                    index = index * $name::CARDINALITY + component;
                )+
                index
            }
        }
    };
}

tuple_label_set!(A);
tuple_label_set!(A B);
tuple_label_set!(A B C);
tuple_label_set!(A B C D);
tuple_label_set!(A B C D E);
tuple_label_set!(A B C D E F);
tuple_label_set!(A B C D E F G);
tuple_label_set!(A B C D E F G H);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Color {
        Red,
        Green,
        Blue,
    }
    impl LabelValue for Color {
        const VALUES: &'static [&'static str] = &["red", "green", "blue"];
        fn index(self) -> usize {
            self as usize
        }
    }

    #[derive(Clone, Copy)]
    struct Liar;
    impl LabelValue for Liar {
        const VALUES: &'static [&'static str] = &["only"];
        fn index(self) -> usize {
            7
        }
    }

    #[test]
    fn tuple_indices_are_dense_and_last_label_fastest() {
        type Two = (Color, Color);
        assert_eq!(Two::CARDINALITY, 9);
        assert_eq!((Color::Red, Color::Red).index(), 0);
        assert_eq!((Color::Red, Color::Green).index(), 1);
        assert_eq!((Color::Green, Color::Red).index(), 3);
        assert_eq!((Color::Blue, Color::Blue).index(), 8);
        assert_eq!(Two::VALUE_SETS, &[Color::VALUES, Color::VALUES]);
    }

    #[test]
    fn out_of_range_component_maps_to_discard_index() {
        type T = (Color, Liar);
        assert_eq!(T::CARDINALITY, 3);
        assert_eq!((Color::Blue, Liar).index(), T::CARDINALITY);
        assert_eq!(Liar.as_str(), "");
    }
}
