//! The offline Places service. (to be written)
