// The contract between the reference agent and whoever watches the guest's console.
// This file is shared: osbuilder's library includes it (src/agent.rs), so the text the
// agent prints and the text `osbuilder boot` waits for cannot drift apart.
//
// The ready line, printed once on the console when the agent is up:
//
//     osbuilder-agent: ready kernel=<uname -r> arch=<uname -m> pid=<pid> uptime=<seconds>
//
// i.e. READY_MARKER, then space-separated key=value fields whose values never contain
// spaces. Readers must ignore fields they do not know; fields are only ever appended.

/// Start of the ready line the agent prints on the console once it is up.
pub const READY_MARKER: &str = "osbuilder-agent: ready";

/// Kernel command-line switch: after the ready line, sync and power the guest off
/// (`osbuilder.poweroff` or `osbuilder.poweroff=1`; `=0` turns it off again). For smoke tests.
pub const POWEROFF_PARAM: &str = "osbuilder.poweroff";

/// Printed just before the agent powers the guest off.
pub const POWEROFF_MARKER: &str = "osbuilder-agent: powering off";
