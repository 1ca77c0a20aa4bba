//! Watching the folder: placeholder until the watcher lands.
