use promshard::LabelValue;

#[derive(Clone, Copy, LabelValue)]
struct Method;

fn main() {}
