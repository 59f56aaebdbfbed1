//! Client lines and peer messages. (to be written)
