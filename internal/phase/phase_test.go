package phase

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestStart(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level slog.Level
		want  []string // in the log; none: nothing logged
	}{
		{"debug", slog.LevelDebug, []string{"msg=phase", `name="read kernel"`, "took=", "elements=3", "holds=true"}},
		{"info", slog.LevelInfo, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tc.level}))
			end := Start(WithLog(context.Background(), log), "read kernel", "elements", 3)
			end("holds", true)
			got := buf.String()
			if tc.want == nil && got != "" {
				t.Fatalf("logged %q at %s", got, tc.level)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Fatalf("log %q lacks %q", got, w)
				}
			}
		})
	}
	Start(context.Background(), "no logger")() // must not panic
}
