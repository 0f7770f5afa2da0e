//! Which OS family a device runs, from the model identifiers it reports.

/// `ProductName` (e.g. `iPad2,5`), `Model` (e.g. `MacBookPro14,3`) and `ModelName` (e.g. `iMac`) in that order
/// of preference; the first that names a known family wins.
pub fn platform_of(
    product_name: Option<&str>,
    model: Option<&str>,
    model_name: Option<&str>,
) -> Option<String> {
    [product_name, model, model_name]
        .into_iter()
        .flatten()
        .find_map(family)
        .map(str::to_string)
}

fn family(name: &str) -> Option<&'static str> {
    let n = name.trim();
    const TABLE: &[(&str, &str)] = &[
        ("iPhone", "iOS"),
        ("iPod", "iOS"),
        ("iPad", "iPadOS"),
        ("AppleTV", "tvOS"),
        ("Apple TV", "tvOS"),
        ("Watch", "watchOS"),
        ("RealityDevice", "visionOS"),
        ("Mac", "macOS"),
        ("iMac", "macOS"),
        ("VirtualMac", "macOS"),
    ];
    TABLE
        .iter()
        .find(|(prefix, _)| n.starts_with(prefix))
        .map(|(_, fam)| *fam)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_families() {
        assert_eq!(
            platform_of(Some("iPad2,5"), None, None).as_deref(),
            Some("iPadOS")
        );
        assert_eq!(
            platform_of(None, Some("MacBookPro14,3"), None).as_deref(),
            Some("macOS")
        );
        assert_eq!(
            platform_of(None, Some("J132AP"), Some("iMac")).as_deref(),
            Some("macOS")
        );
        assert_eq!(
            platform_of(Some("AppleTV5,3"), None, None).as_deref(),
            Some("tvOS")
        );
        assert_eq!(
            platform_of(Some("iPhone14,2"), None, None).as_deref(),
            Some("iOS")
        );
        assert_eq!(platform_of(Some("Toaster1,1"), None, None), None);
    }
}
