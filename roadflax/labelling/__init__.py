"""From unlabelled drives to a labelled image folder: frames sampled and
queued by the model's doubt (`queue`), labels written once and atomically
(`store`), and an audit of the labels a folder already has (`audit`)."""
