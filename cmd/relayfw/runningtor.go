package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/relayfw/relayfw/host"
)

// askRunningTorLater asks the running tors (host.Inputs.AskRunningTor) on
// goroutines of their own and returns the wait for their answers: a tor
// that hangs holds a conversation up to its deadline, which check and
// status spend reading the kernel and, past that, without holding
// relayfw's lock (an apply meanwhile is not kept waiting by tor's user).
func askRunningTorLater(ctx context.Context, in *host.Inputs) (wait func() []host.RunningTor) {
	answers := make(chan []host.RunningTor, 1)
	go func() { answers <- in.AskRunningTor(ctx) }()
	return sync.OnceValue(func() []host.RunningTor { return <-answers })
}

// runningTorDiffers says whether a running tor enforces another exit
// policy than relayfw's (check's exit 4).
func runningTorDiffers(running []host.RunningTor) bool {
	for _, r := range running {
		if r.Asked && !r.Matches {
			return true
		}
	}
	return false
}

// writeRunningTorCheck is check's report on the running tors: a line for
// each tor that was asked, the entries of a difference, and why a tor
// whose torrc names a control socket or port could not be asked (a torrc
// without one is not worth a line; status says it).
func writeRunningTorCheck(w io.Writer, running []host.RunningTor) {
	for _, r := range running {
		switch {
		case !r.Asked && r.Control == "":
		case !r.Asked, r.Matches:
			fmt.Fprintf(w, "running tor %s: %s\n", r.Instance, r.Summary())
		default:
			fmt.Fprintf(w, "running tor %s: enforces another exit policy than relayfw's: %s; %s\n", r.Instance, r.Difference(), r.Advice)
			writeEntries(w, "only tor has:     ", r.OnlyTor, r.OnlyTorTotal)
			writeEntries(w, "only relayfw has: ", r.OnlyRelayfw, r.OnlyRelayfwTotal)
			if r.OrderDiffers || r.OnlyTorTotal > len(r.OnlyTor) || r.OnlyRelayfwTotal > len(r.OnlyRelayfw) {
				fmt.Fprintf(w, "  compare relayfw policy --from-tor --instance %s with relayfw policy --instance %s\n", r.Instance, r.Instance)
			}
			if len(r.Discovered) > 0 {
				fmt.Fprintf(w, "  (not counted: tor's reject of %s, the relay's own address%s tor found itself)\n", joinAddrs(r), plural(len(r.Discovered), "", "es"))
			}
		}
	}
}

func writeEntries(w io.Writer, title string, entries []string, total int) {
	for i, e := range entries {
		if i > 0 {
			title = strings.Repeat(" ", len(title))
		}
		fmt.Fprintf(w, "  %s%s\n", title, e)
	}
	if more := total - len(entries); more > 0 {
		fmt.Fprintf(w, "  %s… and %d more\n", strings.Repeat(" ", len(title)), more)
	}
}

func joinAddrs(r host.RunningTor) string {
	s := make([]string, len(r.Discovered))
	for i, a := range r.Discovered {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// runningTorStatusLines are status's lines on the running tors, one per
// instance.
func runningTorStatusLines(running []host.RunningTor) []string {
	var lines []string
	for _, r := range running {
		line := fmt.Sprintf("running tor: %s: %s", r.Instance, r.Summary())
		if r.Asked && !r.Matches {
			line += " (relayfw check lists the entries)"
		}
		lines = append(lines, line)
	}
	return lines
}

// writeRunningTorMetrics writes relayfw_tor_policy_matches, for the
// instances whose tor could be asked.
func writeRunningTorMetrics(b *strings.Builder, running []host.RunningTor) {
	asked := slices.DeleteFunc(slices.Clone(running), func(r host.RunningTor) bool { return !r.Asked })
	if len(asked) == 0 {
		return
	}
	metricHeader(b, "relayfw_tor_policy_matches", "gauge",
		"Whether the running tor's exit policy (GETINFO exit-policy/full) equals relayfw's for the instance, the relay's own addresses tor found itself apart (absent when tor cannot be asked: relayfw status says why).")
	for _, r := range asked {
		v := 0
		if r.Matches {
			v = 1
		}
		fmt.Fprintf(b, "relayfw_tor_policy_matches{instance=%q} %d\n", r.Instance, v)
	}
}
