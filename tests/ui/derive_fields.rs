use promshard::LabelValue;

#[derive(Clone, Copy, LabelValue)]
enum Route {
    Home,
    User(u32),
    #[label(rename = "home")]
    Index,
}

fn main() {}
