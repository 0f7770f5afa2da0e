//! sea-orm entities, one per table. Timestamps are Unix milliseconds (i64): they compare the same way on
//! SQLite and PostgreSQL, and queue order never depends on them (it uses the `command_queue.id` sequence).

pub mod api_key;
pub mod audit_entry;
pub mod audit_pending;
pub mod command;
pub mod ddm_assignment;
pub mod ddm_declaration;
pub mod ddm_declaration_status;
pub mod ddm_enrollment;
pub mod ddm_group_assignment;
pub mod ddm_set;
pub mod ddm_set_member;
pub mod ddm_status_item;
pub mod device;
pub mod device_attribute;
pub mod device_group;
pub mod device_group_member;
pub mod device_profile;
pub mod enrollment;
pub mod event_outbox;
pub mod event_sink;
pub mod issued_certificate;
pub mod one_time_secret;
pub mod plugin;
pub mod plugin_audit;
pub mod plugin_kv;
pub mod plugin_schedule;
pub mod policy;
pub mod policy_profile;
pub mod policy_rollout;
pub mod policy_rollout_device;
pub mod policy_version;
pub mod push_cert;
pub mod queue_item;
