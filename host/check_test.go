package host

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/relayfw/relayfw/firewall/fake"
)

// TestPlanChangesReadError: a dry run whose kernel read fails says so.
func TestPlanChangesReadError(t *testing.T) {
	sys := testSystem(t)
	rs := policyRuleset(t, "accept *:80,reject *:*")
	b := holding(rs)
	b.Inject(fake.Fault{Op: fake.OpRelayLinks, Err: errors.New("netlink: no answer")})
	changes, err := sys.PlanChanges(context.Background(), b, rs)
	if err == nil || !strings.Contains(err.Error(), "no answer") || changes != nil {
		t.Fatalf("PlanChanges: %q, %v; want the read error", changes, err)
	}
}
