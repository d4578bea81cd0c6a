//! Any datagram on the notify socket: parsed into a message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|datagram: &[u8]| {
    let message = vigil_core::NotifyMessage::parse(datagram);
    let _ = message.is_sign_of_life();
});
