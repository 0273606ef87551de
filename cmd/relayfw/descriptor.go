package main

import "github.com/relayfw/relayfw/host"

// warnDescriptors warns, for each exit instance whose server descriptor
// would be too large for tor's directory authorities, how large and what
// merging its ExitPolicy entries would save (exitpolicy.Descriptor).
// policy, print and apply say it; stdout stays as it is.
func warnDescriptors(g *globals, insts []*host.Instance) {
	for _, w := range descriptorWarnings(insts) {
		g.log.Warn(w)
	}
}

// warnDescriptorsLater is warnDescriptors for apply: what merging would
// save is measured by building the merged policy again (tor's redundancy
// removal, a few hundred milliseconds at 50,000 entries), so it runs on
// the other core while the apply plans and commits; say (apply defers it,
// whatever the apply's outcome) logs the warnings when they are ready.
func warnDescriptorsLater(g *globals, insts []*host.Instance) (say func()) {
	ready := make(chan []string, 1)
	go func() { ready <- descriptorWarnings(insts) }()
	return func() {
		for _, w := range <-ready {
			g.log.Warn(w)
		}
	}
}

func descriptorWarnings(insts []*host.Instance) []string {
	var out []string
	for _, t := range insts {
		if !t.IsExit() {
			continue
		}
		if d := t.Effective.Descriptor(t.Options); d.Over() {
			out = append(out, t.Describe()+": "+d.String())
		}
	}
	return out
}
