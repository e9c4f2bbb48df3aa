//! `config_fields!`: a configuration type's fields written once.
//!
//! From one list of documented fields with their defaults it declares the
//! `#[non_exhaustive]` struct (fields `pub(crate)`), its `Default`, a getter
//! per field and a setter per field on the type's builder (a struct with a
//! `config` field of the configuration type, declared beside it with its
//! `build`, which validates).

/// See the [module docs](self).
macro_rules! config_fields {
    (
        $(#[$meta:meta])*
        pub struct $config:ident, built by $builder:ident {
            $($(#[$doc:meta])* $name:ident: $ty:ty = $default:expr;)*
        }
    ) => {
        $(#[$meta])*
        #[non_exhaustive]
        pub struct $config {
            $($(#[$doc])* pub(crate) $name: $ty,)*
        }

        impl Default for $config {
            fn default() -> Self {
                Self { $($name: $default,)* }
            }
        }

        impl $config {
            $($(#[$doc])* pub fn $name(&self) -> $ty {
                self.$name
            })*
        }

        impl $builder {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            })*
        }
    };
}
