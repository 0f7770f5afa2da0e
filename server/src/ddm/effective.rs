//! An enrollment's effective declarations: the built-in ones and those of every set assigned to it, each
//! once, and the DeclarationsToken over them.

use crate::protocol::ddm::{declarations_token, DeclarationItem};
use crate::storage::ddm::{assignments, declarations, sets, status};
use crate::storage::StorageResult;
use sea_orm::ConnectionTrait;
use std::collections::BTreeMap;

/// What an enrollment should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// Sorted by identifier.
    pub items: Vec<DeclarationItem>,
    pub token: String,
}

impl Effective {
    /// From declarations in any order, possibly repeated (a declaration in two assigned sets).
    pub fn of(items: impl IntoIterator<Item = DeclarationItem>) -> Self {
        let unique: BTreeMap<String, DeclarationItem> = items
            .into_iter()
            .map(|i| (i.identifier.clone(), i))
            .collect();
        let items: Vec<DeclarationItem> = unique.into_values().collect();
        let token = declarations_token(
            items
                .iter()
                .map(|i| (i.identifier.as_str(), i.server_token.as_str())),
        );
        Self { items, token }
    }

    pub fn holds(&self, identifier: &str) -> bool {
        self.items
            .binary_search_by(|i| i.identifier.as_str().cmp(identifier))
            .is_ok()
    }
}

/// The built-in declarations as manifest items.
pub async fn builtin_items<C: ConnectionTrait>(c: &C) -> StorageResult<Vec<DeclarationItem>> {
    declarations::builtins(c)
        .await?
        .into_iter()
        .map(|d| {
            Ok(DeclarationItem {
                category: status::category_of(&d.category)?,
                identifier: d.identifier,
                server_token: d.server_token,
            })
        })
        .collect()
}

/// One enrollment's effective declarations.
pub async fn of_enrollment<C: ConnectionTrait>(
    c: &C,
    enrollment_id: &str,
) -> StorageResult<Effective> {
    let mut items = builtin_items(c).await?;
    let assigned = assignments::sets_of(c, enrollment_id).await?;
    items.extend(
        sets::declarations_of(c, &assigned)
            .await?
            .into_iter()
            .map(|m| DeclarationItem {
                category: m.category,
                identifier: m.identifier,
                server_token: m.server_token,
            }),
    );
    Ok(Effective::of(items))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ddm::Category;

    fn item(id: &str, token: &str) -> DeclarationItem {
        DeclarationItem {
            category: Category::Configuration,
            identifier: id.into(),
            server_token: token.into(),
        }
    }

    #[test]
    fn a_declaration_in_two_sets_counts_once_and_order_does_not_matter() {
        let a = Effective::of([item("b", "2"), item("a", "1"), item("b", "2")]);
        let b = Effective::of([item("a", "1"), item("b", "2")]);
        assert_eq!(a, b);
        assert_eq!(a.items.len(), 2);
        assert!(a.holds("a") && a.holds("b") && !a.holds("c"));
    }

    #[test]
    fn the_token_changes_exactly_when_what_the_device_should_have_changes() {
        let base = Effective::of([item("a", "1"), item("b", "2")]).token;
        assert_ne!(base, Effective::of([item("a", "1"), item("b", "3")]).token);
        assert_ne!(base, Effective::of([item("a", "1")]).token);
        assert_ne!(
            base,
            Effective::of([item("a", "1"), item("b", "2"), item("c", "1")]).token
        );
        assert_eq!(base, Effective::of([item("b", "2"), item("a", "1")]).token);
    }
}
