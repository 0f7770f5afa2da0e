//! What a sync reads and writes of many enrollments at once: its audience, each enrollment with whether
//! it can be told anything, its sets and the DeclarationsToken last announced to it (one joined read, not
//! one per question), and the new tokens recorded from the queue rows the sync just wrote (one statement).

use super::super::entities::ddm_assignment::{self as assignment, Entity as Assignments};
use super::super::entities::ddm_enrollment::{self as state, Entity as States};
use super::super::entities::ddm_group_assignment::{
    self as group_assignment, Entity as GroupAssignments,
};
use super::super::entities::device_group_member::{self as member, Entity as GroupMembers};
use super::super::entities::enrollment::{self, Entity as Enrollments};
use super::super::entities::queue_item::{self, Entity as Queue};
use super::super::queue::IDS_PER_STATEMENT;
use super::super::{StorageError, StorageResult};
use super::assignments;
use sea_orm::sea_query::{
    Expr, ExprTrait, JoinType, OnConflict, Order, Query, SelectStatement, SimpleExpr,
};
use sea_orm::ConnectionTrait;
use std::collections::BTreeMap;

/// Whom a sync is for.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// These enrollments (sorted, without repeats).
    Ids(&'a [String]),
    /// The enrollments holding this declaration through any of their sets.
    Holding(&'a str),
    /// The enrollments holding this set, directly or through a group.
    WithSet(&'a str),
    /// The device channels of this group's members.
    InGroup(i64),
}

/// An enrollment of an audience as a sync finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub enrollment_id: String,
    /// A sync can be queued to it only if it is enabled (through TokenUpdate and not checked out).
    pub enabled: bool,
    /// The sets it holds (its own and its device's groups'), by name, each once.
    pub sets: Vec<String>,
    /// The DeclarationsToken last announced to it (None: never).
    pub announced_token: Option<String>,
}

/// The audience's enrollments that exist, in id order. An audience given by a declaration or a set is
/// read in one statement, binding no ids; one given by ids, one statement per chunk of them.
pub async fn members<C: ConnectionTrait>(c: &C, who: Audience<'_>) -> StorageResult<Vec<Member>> {
    let mut out: BTreeMap<String, Member> = BTreeMap::new();
    let groups = assignments::any_group_assignment(c).await?;
    let filters = match who {
        Audience::Ids(ids) => ids
            .chunks(IDS_PER_STATEMENT)
            .map(|chunk| Expr::col(ENROLLMENT_ID).is_in(chunk.iter().map(String::as_str)))
            .collect(),
        Audience::Holding(identifier) => {
            vec![Expr::col(ENROLLMENT_ID).in_subquery(assignments::holding(identifier))]
        }
        Audience::WithSet(name) => {
            vec![Expr::col(ENROLLMENT_ID).in_subquery(assignments::with_set(name))]
        }
        Audience::InGroup(id) => {
            vec![Expr::col(ENROLLMENT_ID).in_subquery(assignments::in_group(id))]
        }
    };
    for filter in filters {
        for row in c.query_all(&members_query(filter, groups)).await? {
            let id: String = row.try_get_by_index(0)?;
            let m = out.entry(id.clone()).or_insert(Member {
                enrollment_id: id,
                enabled: row.try_get_by_index(1)?,
                sets: Vec::new(),
                announced_token: row.try_get_by_index(2)?,
            });
            m.sets.extend(row.try_get_by_index::<Option<String>>(3)?);
            if groups {
                m.sets.extend(row.try_get_by_index::<Option<String>>(4)?);
            }
        }
    }
    Ok(out
        .into_values()
        .map(|mut m| {
            m.sets.sort();
            m.sets.dedup();
            m
        })
        .collect())
}

const ENROLLMENT_ID: (Enrollments, enrollment::Column) = (Enrollments, enrollment::Column::Id);

/// Each enrollment matching `filter` with its sync state, its own sets and (with `groups`) those of its
/// device's groups: one row per pair of those (a device channel's id is its device's, so the group join
/// finds nothing for a user channel). Rows multiply, but each join is an index lookup and an enrollment
/// has few of either.
fn members_query(filter: SimpleExpr, groups: bool) -> SelectStatement {
    let mut q = Query::select()
        .column(ENROLLMENT_ID)
        .column((Enrollments, enrollment::Column::Enabled))
        .column((States, state::Column::AnnouncedToken))
        .column((Assignments, assignment::Column::SetName))
        .from(Enrollments)
        .join(
            JoinType::LeftJoin,
            States,
            Expr::col((States, state::Column::EnrollmentId)).equals(ENROLLMENT_ID),
        )
        .join(
            JoinType::LeftJoin,
            Assignments,
            Expr::col((Assignments, assignment::Column::EnrollmentId)).equals(ENROLLMENT_ID),
        )
        .and_where(filter)
        .to_owned();
    if groups {
        q.column((GroupAssignments, group_assignment::Column::SetName))
            .join(
                JoinType::LeftJoin,
                GroupMembers,
                Expr::col((GroupMembers, member::Column::DeviceId)).equals(ENROLLMENT_ID),
            )
            .join(
                JoinType::LeftJoin,
                GroupAssignments,
                Expr::col((GroupAssignments, group_assignment::Column::GroupId))
                    .equals((GroupMembers, member::Column::GroupId)),
            );
    }
    q
}

/// Record that `token` was announced to every enrollment the command `command_uuid` is queued to: one
/// `INSERT … SELECT` from its queue rows, whatever their number.
pub async fn record_announced<C: ConnectionTrait>(
    c: &C,
    command_uuid: &str,
    token: &str,
    now: i64,
) -> StorageResult<()> {
    let rows = Query::select()
        .column(queue_item::Column::EnrollmentId)
        .expr(Expr::val(token))
        .expr(Expr::val(now))
        .from(Queue)
        .and_where(Expr::col(queue_item::Column::CommandUuid).eq(command_uuid))
        .order_by(queue_item::Column::EnrollmentId, Order::Asc)
        .to_owned();
    let insert = Query::insert()
        .into_table(States)
        .columns([
            state::Column::EnrollmentId,
            state::Column::AnnouncedToken,
            state::Column::AnnouncedAt,
        ])
        .select_from(rows)
        .map_err(|e| StorageError::Corrupt(format!("announced statement: {e}")))?
        .on_conflict(
            OnConflict::column(state::Column::EnrollmentId)
                .update_columns([state::Column::AnnouncedToken, state::Column::AnnouncedAt])
                .to_owned(),
        )
        .to_owned();
    c.execute(&insert).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CommandEnvelope;
    use crate::storage::ddm::{assignments, sets, status};
    use crate::storage::devices::{self, AuthenticateFacts};
    use crate::storage::enrollments::{self, TokenUpdateFacts};
    use crate::storage::queue;
    use crate::storage::testing::{device_channel, test_databases};

    async fn enrolled<C: ConnectionTrait>(c: &C, id: &str, enabled: bool) {
        let facts = AuthenticateFacts {
            identity_fingerprint: format!("fp-{id}"),
            ..Default::default()
        };
        devices::upsert_authenticated(c, id, facts, 10)
            .await
            .unwrap();
        let channel = device_channel(id);
        enrollments::ensure_device_channel(c, &channel, 10)
            .await
            .unwrap();
        if enabled {
            let facts = TokenUpdateFacts {
                topic: "com.apple.mgmt.X".into(),
                push_magic: "magic".into(),
                token: id.as_bytes().to_vec(),
                awaiting_configuration: Some(false),
                raw: b"<plist/>".to_vec(),
            };
            enrollments::apply_token_update(c, &channel, facts, 20, None)
                .await
                .unwrap();
        }
    }

    /// One read answers, for each channel that exists, whether it is enabled, its sets (sorted) and its
    /// announced token; an audience given by a set or a declaration finds the same as one given by ids.
    #[tokio::test]
    async fn members_are_the_enabled_channels_with_their_sets_and_announced_token() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            enrolled(db, "A", true).await;
            enrolled(db, "B", true).await;
            enrolled(db, "OFF", false).await;
            for (id, set) in [("A", "s2"), ("A", "s1"), ("OFF", "s1")] {
                assignments::assign(db, id, set, 30).await.unwrap();
            }
            status::set_synced(&s, "B", "tok-b", 40).await.unwrap();
            let ids = ["A", "B", "NOBODY", "OFF"].map(String::from);
            let found = members(db, Audience::Ids(&ids)).await.unwrap();
            assert_eq!(
                found,
                vec![
                    Member {
                        enrollment_id: "A".into(),
                        enabled: true,
                        sets: vec!["s1".into(), "s2".into()],
                        announced_token: None,
                    },
                    Member {
                        enrollment_id: "B".into(),
                        enabled: true,
                        sets: vec![],
                        announced_token: Some("tok-b".into()),
                    },
                    Member {
                        enrollment_id: "OFF".into(),
                        enabled: false,
                        sets: vec!["s1".into()],
                        announced_token: None,
                    },
                ],
                "{}",
                tdb.label
            );
            sets::put(db, "s1", &["d1".to_string()], 30).await.unwrap();
            let ids = |who| async move {
                let m = members(db, who).await.unwrap();
                m.into_iter().map(|m| m.enrollment_id).collect::<Vec<_>>()
            };
            let s1 = vec!["A".to_string(), "OFF".to_string()];
            assert_eq!(ids(Audience::WithSet("s1")).await, s1, "{}", tdb.label);
            assert_eq!(ids(Audience::Holding("d1")).await, s1, "{}", tdb.label);
            assert!(
                ids(Audience::Holding("d2")).await.is_empty(),
                "{}",
                tdb.label
            );
        }
    }

    /// A set assigned to a group is held by its members' device channels (not their user channels), beside
    /// their own sets, each once; every audience and read finds them, and membership alone decides it.
    #[tokio::test]
    async fn a_groups_sets_are_held_by_its_members_device_channels() {
        use crate::storage::groups::{self, members as group_members, GroupKind};
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["A", "B", "C"] {
                enrolled(db, id, true).await;
            }
            sets::put(db, "g", &["d1".to_string()], 30).await.unwrap();
            sets::put(db, "own", &["d2".to_string()], 30).await.unwrap();
            let lab = groups::insert(db, "lab", GroupKind::Static, None, 30)
                .await
                .unwrap()
                .id;
            let two = ["A", "B"].map(String::from);
            group_members::add(db, lab, &two, 30).await.unwrap();
            assert!(assignments::assign_group(db, lab, "g", 30).await.unwrap());
            assert!(!assignments::assign_group(db, lab, "g", 31).await.unwrap());
            // A holds "g" both ways: once.
            assignments::assign(db, "A", "g", 30).await.unwrap();
            assignments::assign(db, "A", "own", 30).await.unwrap();
            assignments::assign(db, "A:user", "g", 30).await.unwrap();

            let ids = ["A", "B", "C"].map(String::from);
            let found = members(db, Audience::Ids(&ids)).await.unwrap();
            let sets_of: Vec<(String, Vec<String>)> = found
                .into_iter()
                .map(|m| (m.enrollment_id, m.sets))
                .collect();
            let expected = vec![
                ("A".to_string(), vec!["g".to_string(), "own".to_string()]),
                ("B".to_string(), vec!["g".to_string()]),
                ("C".to_string(), vec![]),
            ];
            assert_eq!(sets_of, expected, "{}", tdb.label);
            assert_eq!(
                assignments::sets_of(db, "B").await.unwrap(),
                ["g"],
                "{}",
                tdb.label
            );
            let audience = |who| async move {
                let m = members(db, who).await.unwrap();
                m.into_iter().map(|m| m.enrollment_id).collect::<Vec<_>>()
            };
            let ab = vec!["A".to_string(), "B".to_string()];
            assert_eq!(audience(Audience::WithSet("g")).await, ab, "{}", tdb.label);
            assert_eq!(audience(Audience::Holding("d1")).await, ab, "{}", tdb.label);
            assert_eq!(audience(Audience::InGroup(lab)).await, ab, "{}", tdb.label);
            assert_eq!(
                assignments::enrollments_holding(db, "d1").await.unwrap(),
                ["A", "A:user", "B"],
                "{}",
                tdb.label
            );
            assert!(assignments::holds(db, "B", "d1").await.unwrap());
            assert!(!assignments::holds(db, "B", "d2").await.unwrap());
            assert_eq!(
                assignments::groups_with_sets(db, &[lab, lab + 1])
                    .await
                    .unwrap(),
                [lab],
                "{}",
                tdb.label
            );

            // B leaves the group: it holds nothing; the set deleted: no group carries it.
            group_members::remove(db, lab, &["B".to_string()])
                .await
                .unwrap();
            assert!(assignments::sets_of(db, "B").await.unwrap().is_empty());
            assert!(!assignments::holds(db, "B", "d1").await.unwrap());
            assert!(sets::delete(db, "g").await.unwrap());
            assert!(assignments::sets_of_group(db, lab)
                .await
                .unwrap()
                .is_empty());
            assert_eq!(
                assignments::sets_of(db, "A").await.unwrap(),
                ["own"],
                "{}",
                tdb.label
            );
            // Deleting a group takes its assignments with it (the foreign key).
            assignments::assign_group(db, lab, "own", 40).await.unwrap();
            assert!(groups::delete(db, lab).await.unwrap());
            assert!(assignments::groups_with_sets(db, &[lab])
                .await
                .unwrap()
                .is_empty());
            tdb.cleanup().await;
        }
    }

    /// The announced token is recorded for exactly the channels the command is queued to, creating their
    /// sync state or updating it without touching what the device last synced.
    #[tokio::test]
    async fn the_announced_token_is_recorded_from_the_commands_queue_rows() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["A", "B", "C"] {
                enrolled(db, id, true).await;
            }
            status::set_synced(&s, "B", "old", 40).await.unwrap();
            let mut command = plist::Dictionary::new();
            command.insert("RequestType".into(), "DeclarativeManagement".into());
            let env = CommandEnvelope::new("CMD-1".into(), command).unwrap();
            queue::insert_command(db, &env, 0, "ddm", None, 50)
                .await
                .unwrap();
            let to = ["A", "B"].map(String::from);
            queue::enqueue(db, "CMD-1", 0, None, &to, 50).await.unwrap();

            record_announced(db, "CMD-1", "new", 60).await.unwrap();

            let a = status::sync_state(db, "A").await.unwrap().unwrap();
            assert_eq!(
                (a.announced_token.as_deref(), a.announced_at, a.synced_token),
                (Some("new"), Some(60), None),
                "{}",
                tdb.label
            );
            let b = status::sync_state(db, "B").await.unwrap().unwrap();
            assert_eq!(
                (b.announced_token.as_deref(), b.synced_token.as_deref()),
                (Some("new"), Some("old")),
                "{}",
                tdb.label
            );
            assert_eq!(
                status::sync_state(db, "C").await.unwrap(),
                None,
                "{}",
                tdb.label
            );
        }
    }

    /// A newer command of a source withdraws that source's older copies still waiting on its own channels,
    /// and nothing else: not another source's, not one already delivered, not on other channels.
    #[tokio::test]
    async fn a_newer_sync_withdraws_only_the_waiting_older_ones_on_its_channels() {
        for tdb in test_databases().await {
            let s = tdb.storage().await.unwrap();
            let db = s.db();
            for id in ["A", "B", "C"] {
                enrolled(db, id, true).await;
            }
            let queued = |uuid: &'static str, source: &'static str, to: &'static [&'static str]| async move {
                let mut command = plist::Dictionary::new();
                command.insert("RequestType".into(), "DeclarativeManagement".into());
                let env = CommandEnvelope::new(uuid.into(), command).unwrap();
                queue::insert_command(db, &env, 0, source, None, 50)
                    .await
                    .unwrap();
                let to: Vec<String> = to.iter().map(|s| s.to_string()).collect();
                queue::enqueue(db, uuid, 0, None, &to, 50).await.unwrap();
            };
            queued("SENT", "ddm", &["B"]).await;
            let (sent, _) = queue::next(db, "B", 55).await.unwrap().unwrap();
            assert_eq!(sent.command_uuid, "SENT");
            queued("OLD", "ddm", &["A", "B", "C"]).await;
            queued("API", "api", &["A"]).await;
            queued("NEW", "ddm", &["A", "B"]).await;

            let withdrawn = queue::withdraw_superseded(db, "NEW", "ddm").await.unwrap();

            assert_eq!(withdrawn, 2, "{}", tdb.label);
            let pending = |id: &'static str| async move {
                let rows = queue::for_enrollment(db, id, true, 10).await.unwrap();
                rows.into_iter()
                    .map(|(i, _)| i.command_uuid)
                    .collect::<Vec<_>>()
            };
            assert_eq!(pending("A").await, ["API", "NEW"], "{}", tdb.label);
            assert_eq!(pending("B").await, ["SENT", "NEW"], "{}", tdb.label);
            assert_eq!(pending("C").await, ["OLD"], "{}", tdb.label);
        }
    }
}
