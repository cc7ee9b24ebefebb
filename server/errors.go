package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lopnr/lopnr/extract"
	"github.com/lopnr/lopnr/keystore"
	"github.com/lopnr/lopnr/linkage"
	"github.com/lopnr/lopnr/server/authz"
	"github.com/lopnr/lopnr/server/jobs"
)

// The sentinels the services return; toStatus maps them to codes.
var (
	errNotFound   = errors.New("not found")
	errExists     = errors.New("already exists")
	errFourEyes   = errors.New("four eyes")
	errState      = errors.New("not in a state that allows this")
	errAuditDown  = errors.New("the audit log cannot be written")
	errBudget     = errors.New("evaluate budget exhausted")
	errNotPartner = errors.New("not a registered partner")
)

// fieldError is an invalid request field: its message names the field and
// what was expected, never the value sent.
type fieldError struct {
	field, want string
}

func (e *fieldError) Error() string { return e.field + ": " + e.want }

// notFoundError names what was not found.
type notFoundError struct{ what, id string }

func (e *notFoundError) Error() string { return fmt.Sprintf("%s %q not found", e.what, e.id) }
func (e *notFoundError) Unwrap() error { return errNotFound }

// toStatus turns a service's error into a gRPC status: the one place where
// errors meet codes. The domain packages' errors that callers may see
// (spec, variable and key store errors) are built to hold no record value,
// and pass with their text; anything else is an internal error, logged
// here under a reference and answered with the reference only.
func toStatus(err error, logger *slog.Logger) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		field *fieldError
		spec  *linkage.SpecError
		fe    *linkage.FieldError
		ve    *extract.VariableError
		de    *keystore.DestroyedError
	)
	code := codes.Unknown
	switch {
	case errors.As(err, &field), errors.As(err, &spec), errors.As(err, &fe), errors.As(err, &ve),
		errors.Is(err, extract.ErrNotApproved), errors.Is(err, keystore.ErrInvalidArgument), errors.Is(err, extract.ErrExpiry):
		code = codes.InvalidArgument
	case errors.Is(err, authz.ErrDenied), errors.Is(err, errFourEyes), errors.Is(err, errNotPartner):
		code = codes.PermissionDenied
	case errors.Is(err, errNotFound), errors.Is(err, jobs.ErrNotFound), errors.Is(err, keystore.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errExists), errors.Is(err, keystore.ErrProjectExists):
		code = codes.AlreadyExists
	case errors.As(err, &de), errors.Is(err, keystore.ErrDestroyed), errors.Is(err, keystore.ErrExpired),
		errors.Is(err, keystore.ErrHeld), errors.Is(err, jobs.ErrFinal), errors.Is(err, errState):
		code = codes.FailedPrecondition
	case errors.Is(err, errAuditDown):
		code = codes.Unavailable
	case errors.Is(err, errBudget):
		code = codes.ResourceExhausted
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	}
	if code != codes.Unknown {
		return status.Error(code, err.Error())
	}
	var b [6]byte
	rand.Read(b[:])
	ref := hex.EncodeToString(b[:])
	logger.Error("internal error", "ref", ref, "err", err)
	return status.Errorf(codes.Internal, "internal error (the server log has the detail under ref %s)", ref)
}

// existsError names what already exists.
type existsError struct{ what, id string }

func (e *existsError) Error() string { return fmt.Sprintf("%s %q already exists", e.what, e.id) }
func (e *existsError) Unwrap() error { return errExists }

// stateError says why a thing cannot be done now.
type stateError struct{ msg string }

func (e *stateError) Error() string { return e.msg }
func (e *stateError) Unwrap() error { return errState }

// fourEyesError says which second person is missing.
type fourEyesError struct{ msg string }

func (e *fourEyesError) Error() string { return "four eyes: " + e.msg }
func (e *fourEyesError) Unwrap() error { return errFourEyes }

func itoa(i int) string { return strconv.Itoa(i) }

// notPartnerError is a partner role without a registration on the project.
type notPartnerError struct{ identity, project string }

func (e *notPartnerError) Error() string {
	return fmt.Sprintf("%s is not registered as a partner of project %s; an approver registers partners", e.identity, e.project)
}
func (e *notPartnerError) Unwrap() error { return errNotPartner }

// budgetError says how much of a partner's Evaluate budget is left.
type budgetError struct {
	project             string
	budget, used, asked int64
}

func (e *budgetError) Error() string {
	return fmt.Sprintf("the evaluate budget of %d elements in project %s is exhausted: %d used, %d more asked; an approver can raise it",
		e.budget, e.project, e.used, e.asked)
}
func (e *budgetError) Unwrap() error { return errBudget }

// partnerExistsError refuses a second registration of a partner: a
// registration is never replaced.
type partnerExistsError struct{ identity, project string }

func (e *partnerExistsError) Error() string {
	return fmt.Sprintf("partner %s is registered on project %s already (or waits for approval): a registration is not replaced; a new key is a new registration, of a new identity", e.identity, e.project)
}
func (e *partnerExistsError) Unwrap() error { return errExists }

// exchangeError is a registered partner asking for an exchange its
// registration does not name.
type exchangeError struct {
	identity, project, exchange string
	has                         []string
}

func (e *exchangeError) Error() string {
	has := strings.Join(e.has, ", ")
	if has == "" {
		has = "none"
	}
	return fmt.Sprintf("%s is not registered for the %s exchange in project %s (its registration names %s); a new registration, approved by a second person, can name it",
		e.identity, e.exchange, e.project, has)
}
func (e *exchangeError) Unwrap() error { return errNotPartner }

// uploadBudgetError says a partner's daily upload budget is used up.
type uploadBudgetError struct {
	project     string
	limit, left int64
}

func (e *uploadBudgetError) Error() string {
	return fmt.Sprintf("the upload budget of %d rows a day in project %s is used up: %d rows are left today (UTC); send the rest tomorrow", e.limit, e.project, max(e.left, 0))
}
func (e *uploadBudgetError) Unwrap() error { return errBudget }
