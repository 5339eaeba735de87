//! Operations: what turns validated options into a started, filled environment. Above the
//! environment layer, below the library's face (sandbox, session, pool), which call them.

pub(crate) mod start;
