//! Structured logging (capability `log`, always granted).
//!
//! The server tags each line with the plugin, the hook and the event id. Use the macros, which take
//! `format!` arguments and, after a `;`, optional `key = value` fields (any `Display` value):
//!
//! ```
//! use mdm_plugin_sdk::{info, warn};
//! let serial = "C02XYZ";
//! info!("enrollment allowed");
//! info!("serial {serial} allowed"; serial = serial, rule = "prefix");
//! warn!("{} profiles configured, none valid", 3);
//! ```

pub use crate::bindings::mdm::plugin::log::Level;

/// Writes one log line. The macros ([`info!`](crate::info) and friends) are usually handier.
pub fn write(level: Level, message: &str, fields: &[(String, String)]) {
    crate::host::log::log(level, message, fields);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __mdm_log {
    ($level:expr, $fmt:literal $(, $arg:expr)* ; $($key:ident = $value:expr),+ $(,)?) => {
        $crate::log::write(
            $level,
            &::std::format!($fmt $(, $arg)*),
            &[$((
                ::std::string::String::from(::core::stringify!($key)),
                ::std::string::ToString::to_string(&$value),
            )),+],
        )
    };
    ($level:expr, $($arg:tt)+) => {
        $crate::log::write($level, &::std::format!($($arg)+), &[])
    };
}

/// Logs at trace level: `trace!("format {}", args; key = value, ...)`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::__mdm_log!($crate::log::Level::Trace, $($arg)+) };
}

/// Logs at debug level: `debug!("format {}", args; key = value, ...)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::__mdm_log!($crate::log::Level::Debug, $($arg)+) };
}

/// Logs at info level: `info!("format {}", args; key = value, ...)`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::__mdm_log!($crate::log::Level::Info, $($arg)+) };
}

/// Logs at warn level: `warn!("format {}", args; key = value, ...)`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::__mdm_log!($crate::log::Level::Warn, $($arg)+) };
}

/// Logs at error level: `error!("format {}", args; key = value, ...)`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::__mdm_log!($crate::log::Level::Error, $($arg)+) };
}

#[cfg(test)]
mod tests {
    use super::Level;
    use crate::mock::{self, LogRecord};

    #[test]
    fn macros_format_and_carry_fields() {
        let n = 3;
        let who = "C02";
        crate::info!("plain");
        crate::warn!("{} of {}", 1, n);
        crate::error!("inline {who}"; serial = who, count = n + 1);
        crate::debug!("with trailing comma"; a = 1,);
        crate::trace!("{x}", x = 5);
        assert_eq!(
            mock::logs(),
            vec![
                LogRecord {
                    level: Level::Info,
                    message: "plain".into(),
                    fields: vec![]
                },
                LogRecord {
                    level: Level::Warn,
                    message: "1 of 3".into(),
                    fields: vec![]
                },
                LogRecord {
                    level: Level::Error,
                    message: "inline C02".into(),
                    fields: vec![
                        ("serial".into(), "C02".into()),
                        ("count".into(), "4".into())
                    ],
                },
                LogRecord {
                    level: Level::Debug,
                    message: "with trailing comma".into(),
                    fields: vec![("a".into(), "1".into())],
                },
                LogRecord {
                    level: Level::Trace,
                    message: "5".into(),
                    fields: vec![]
                },
            ]
        );
    }
}
