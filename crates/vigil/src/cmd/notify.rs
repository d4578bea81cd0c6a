//! `vigil notify test NAME`: is this channel set up right? A test message, sent now.

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::notifications::deliver::{DeliveryError, deliver};
use crate::notifications::message::{Delivery, Message};

pub fn test(config: &Config, name: &str) -> i32 {
    let Some(channel) = config.notify.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = config.notify.iter().map(|c| c.name.as_str()).collect();
        eprintln!(
            "no channel `{name}` in {}: {}",
            config.path.display(),
            match crate::config::did_you_mean(name, &names) {
                Some(s) => format!("did you mean `{s}`?"),
                None if names.is_empty() => "it has no [notify.NAME] section".to_string(),
                None => format!("its channels are {}", names.join(", ")),
            }
        );
        return EXIT_USAGE;
    };
    let message = Message::test(name, &config.node);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return EXIT_FAILURE;
        }
    };
    let client = crate::http_client::build(crate::http_client::builder);
    let messages = [message];
    let result = rt.block_on(deliver(
        &client,
        channel,
        &Delivery {
            messages: &messages,
        },
    ));
    let kind = channel.kind.as_str();
    match result {
        Ok(answer) => {
            println!("{name} ({kind}) took the test message: {}", answer.status);
            if !answer.body.trim().is_empty() {
                println!("{}", answer.body.trim());
            }
            EXIT_OK
        }
        Err(e @ DeliveryError::Retry { .. }) => {
            eprintln!("{name} ({kind}) did not take the test message: {e} (vigil would retry)");
            EXIT_FAILURE
        }
        Err(e @ DeliveryError::Refused { .. }) => {
            eprintln!("{name} ({kind}) did not take the test message: {e}");
            EXIT_FAILURE
        }
    }
}
