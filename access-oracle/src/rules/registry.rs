//! The registry: one line per rule turns it into a field of [`super::RulesConfig`] (its
//! `[rules.NAME]` table), of [`super::AccountSlots`] and [`super::IpSlots`] (its state,
//! inline in the account's or address's live entry) and a call in every hook's
//! dispatch, in the order of the lines.

/// Builds the rule set from `name: Type` lines (each with its doc comment).
macro_rules! rules {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Every rule's settings: the `[rules.*]` tables.
        #[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct RulesConfig {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Every rule's state about one account, kept in its live entry (a rule that
        /// keeps none has `()` here, which takes no space).
        #[derive(Debug, Default)]
        pub struct AccountSlots {
            $( $(#[doc = $doc])* pub $field: <$ty as $crate::rules::Rule>::AccountSlot, )*
        }

        /// Every rule's state about one source address.
        #[derive(Debug, Default)]
        pub struct IpSlots {
            $( $(#[doc = $doc])* pub $field: <$ty as $crate::rules::Rule>::IpSlot, )*
        }

        impl RulesConfig {
            /// Every rule's name (its `[rules.NAME]` table and what its alerts say), in
            /// the registry's order.
            pub const NAMES: &'static [&'static str] =
                &[ $( <$ty as $crate::rules::Rule>::NAME ),* ];

            /// The `mode` of the rule named `name` (`enforce` for a name no rule has).
            pub fn mode_of(&self, name: &str) -> $crate::rules::Mode {
                $(
                    if name == <$ty as $crate::rules::Rule>::NAME {
                        return $crate::rules::Rule::mode(&self.$field);
                    }
                )*
                $crate::rules::Mode::Enforce
            }

            /// Checks every rule, adding each problem found.
            pub fn validate(&self, problems: &mut $crate::problems::Problems) {
                $( $crate::rules::Rule::validate(&self.$field, problems); )*
            }

            /// Every rule's `account_failure` hook.
            pub(crate) fn account_failure(
                &self,
                failure: &$crate::rules::Failure<'_>,
                slots: &mut AccountSlots,
                trips: &mut Vec<$crate::rules::Trip>,
            ) {
                $( trips.extend($crate::rules::Rule::account_failure(
                    &self.$field, failure, &mut slots.$field)); )*
            }

            /// Every rule's `address_failure` hook.
            pub(crate) fn address_failure(
                &self,
                failure: &$crate::rules::Failure<'_>,
                slots: &mut IpSlots,
                trips: &mut Vec<$crate::rules::Trip>,
            ) {
                $( trips.extend($crate::rules::Rule::address_failure(
                    &self.$field, failure, &mut slots.$field)); )*
            }

            /// Every rule's `login_ok` hook; each sees the trips of the rules before it.
            pub(crate) fn login_ok(
                &self,
                login: &$crate::rules::LoginOk<'_>,
                slots: &mut AccountSlots,
                trips: &mut Vec<$crate::rules::Trip>,
            ) {
                let first = trips.len();
                $(
                    if let Some(trip) = $crate::rules::Rule::login_ok(
                        &self.$field, login, &trips[first..], &mut slots.$field)
                    {
                        trips.push(trip);
                    }
                )*
            }

            /// Every rule's `recipients` hook.
            pub(crate) fn recipients(
                &self,
                sent: &$crate::rules::Recipients<'_>,
                slots: &mut AccountSlots,
                trips: &mut Vec<$crate::rules::Trip>,
            ) {
                $( trips.extend($crate::rules::Rule::recipients(
                    &self.$field, sent, &mut slots.$field)); )*
            }
        }
    };
}
pub(crate) use rules;
