//! Device groups: static (a list of devices) and dynamic (a rule over device facts), with the membership of
//! both kinds materialised in one table, so "the devices of group G" and "the groups of device D" are each
//! one indexed lookup whatever the fleet's size.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct M0010Groups;

impl MigrationName for M0010Groups {
    fn name(&self) -> &str {
        "m0010_groups"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0010Groups {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // `rule` is the canonical JSON of a dynamic group's rule (null for a static group).
        m.create_table(
            Table::create()
                .table("device_groups")
                .col(big_pk_auto("id"))
                .col(string_uniq("name"))
                .col(string("kind"))
                .col(text_null("rule"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        // A group's or a device's deletion takes its memberships with it; the foreign key to the group
        // also keeps a membership written by a check-in from outliving a group deleted meanwhile.
        m.create_table(
            Table::create()
                .table("device_group_members")
                .col(big_integer("group_id"))
                .col(string("device_id"))
                .col(big_integer("since"))
                .primary_key(Index::create().col("group_id").col("device_id"))
                .foreign_key(
                    ForeignKey::create()
                        .from("device_group_members", "group_id")
                        .to("device_groups", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .from("device_group_members", "device_id")
                        .to("devices", "id")
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_device_group_members_device")
                .table("device_group_members")
                .col("device_id")
                .col("group_id")
                .to_owned(),
        )
        .await?;
        // The device list filters by attribute (`?attribute=key=value`): by key, not by scanning them all.
        m.create_index(
            Index::create()
                .name("idx_device_attributes_key")
                .table("device_attributes")
                .col("key")
                .col("device_id")
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name("idx_device_attributes_key")
                .table("device_attributes")
                .to_owned(),
        )
        .await?;
        for t in ["device_group_members", "device_groups"] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
