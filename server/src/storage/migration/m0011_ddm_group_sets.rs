//! DDM sets assigned to device groups: every member device's device channel holds the set, and a device
//! that joins or leaves the group gains or loses it with no one assigning anything.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0011DdmGroupSets;

impl MigrationName for M0011DdmGroupSets {
    fn name(&self) -> &str {
        "m0011_ddm_group_sets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0011DdmGroupSets {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Deleting the group or the set takes the assignment with it.
        m.create_table(
            Table::create()
                .table("ddm_group_assignments")
                .col(big_integer("group_id"))
                .col(string("set_name"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("group_id").col("set_name"))
                .foreign_key(
                    ForeignKey::create()
                        .from("ddm_group_assignments", "group_id")
                        .to("device_groups", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from("ddm_group_assignments", "set_name")
                        .to("ddm_sets", "name")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_ddm_group_assignments_set")
                .table("ddm_group_assignments")
                .col("set_name")
                .col("group_id")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table("ddm_group_assignments")
                .if_exists()
                .to_owned(),
        )
        .await
    }
}
