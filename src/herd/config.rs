//! The herd file: parsing and validation. (to be written)
