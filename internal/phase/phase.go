// Package phase times the phases of a command (read inputs, compile, read
// kernel, commit, record) for the debug log, so that anyone can see where
// a command's time goes: relayfw --log-level debug.
package phase

import (
	"context"
	"log/slog"
	"time"
)

type key struct{}

// WithLog makes Start log to log at debug level.
func WithLog(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, key{}, log)
}

// Start starts timing the phase name; the returned func ends it and logs
// its duration with attrs and the end's own. Without a logger in ctx
// (WithLog) it costs nothing.
func Start(ctx context.Context, name string, attrs ...any) (end func(more ...any)) {
	log, _ := ctx.Value(key{}).(*slog.Logger)
	if log == nil || !log.Enabled(ctx, slog.LevelDebug) {
		return func(...any) {}
	}
	start := time.Now()
	return func(more ...any) {
		took := time.Since(start).Round(10 * time.Microsecond)
		log.Debug("phase", append(append([]any{"name", name, "took", took}, attrs...), more...)...)
	}
}
