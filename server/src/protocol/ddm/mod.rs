//! Declarative Device Management (DDM): the JSON a device fetches through `DeclarativeManagement` check-ins
//! (`tokens`, `declaration-items`, `declaration/<category>/<identifier>`), the status reports it sends back,
//! and the checks an admin's declaration passes before it is stored.
//!
//! Pure: no I/O. What the checks need from Apple's schemas is generated into `schemas.json` by
//! `tests/tests/suite/ddm_schemas.rs` and embedded here, so the server never reads the spec at run time.

mod canonical;
mod declaration;
mod path;
mod schema;
mod status;
mod tokens;

pub use declaration::{
    check_identifier, Declaration, DeclarationError, IDENTIFIER_RULE, MAX_DECLARATION_BYTES,
    MAX_IDENTIFIER_LEN,
};
pub use schema::{declaration_types, references_mut, status_item_is_scalar, status_item_names};
pub use status::{
    DeclarationStatus, StatusError, StatusItemError, StatusReport, Validity,
    MAX_STATUS_DECLARATIONS, MAX_STATUS_DEPTH, MAX_STATUS_ERRORS, MAX_STATUS_ITEMS,
    MAX_STATUS_REPORT_BYTES,
};
pub use tokens::{
    declaration_items_response, declarations_token, server_token, sync_tokens_data,
    tokens_response, DeclarationItem,
};

use serde::{Deserialize, Serialize};

/// The four kinds of declaration. Each is served at `declaration/<category>/<identifier>` and listed under
/// its own key in `declaration-items` and in status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Activation,
    Asset,
    Configuration,
    Management,
}

impl Category {
    pub const ALL: [Category; 4] = [
        Category::Activation,
        Category::Asset,
        Category::Configuration,
        Category::Management,
    ];

    /// The category a declaration Type names in its third dotted segment: `com.apple.configuration.x` is a
    /// configuration (Apple names every type so).
    pub fn of_type(declaration_type: &str) -> Option<Category> {
        declaration_type.split('.').nth(2).and_then(Category::parse)
    }

    /// The path segment in `declaration/<category>/<identifier>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Activation => "activation",
            Category::Asset => "asset",
            Category::Configuration => "configuration",
            Category::Management => "management",
        }
    }

    /// The category a path segment names (exactly as [`Category::as_str`] writes it).
    pub fn parse(segment: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == segment)
    }

    /// The category's list in a `declaration-items` response.
    fn items_key(self) -> &'static str {
        match self {
            Category::Activation => "Activations",
            Category::Asset => "Assets",
            Category::Configuration => "Configurations",
            Category::Management => "Management",
        }
    }

    /// The category's list in the `management.declarations` status item.
    fn status_key(self) -> &'static str {
        match self {
            Category::Activation => "activations",
            Category::Asset => "assets",
            Category::Configuration => "configurations",
            Category::Management => "management",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_by_type_and_segment() {
        assert_eq!(
            Category::of_type("com.apple.configuration.passcode.settings"),
            Some(Category::Configuration)
        );
        assert_eq!(
            Category::of_type("com.apple.activation.simple"),
            Some(Category::Activation)
        );
        assert_eq!(
            Category::of_type("com.apple.asset.data"),
            Some(Category::Asset)
        );
        assert_eq!(
            Category::of_type("com.apple.management.properties"),
            Some(Category::Management)
        );
        assert_eq!(Category::of_type("com.apple.configurations.x"), None);
        assert_eq!(Category::of_type("configuration"), None);
        assert_eq!(Category::of_type(""), None);
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::from(c.as_str())
            );
        }
        assert_eq!(Category::parse("Configuration"), None);
        assert!(Category::ALL.windows(2).all(|w| w[0] < w[1]));
    }
}
