//! The proxy-herd command line. (to be written)
