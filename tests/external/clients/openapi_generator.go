// A client generated from openapi.yaml by openapi-generator (`go`) talks to the sandbox relay: a
// text, an image and a template, a status lookup, and a message the schema cannot refuse (two
// buttons with one id) read back as a typed Problem.
//
// Copied into the generated module as check/main.go, built with go build, and run:
//
//	check <relay URL> <token>
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	relay "example.com/qikchat/relay-go"
)

func main() {
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "openapi-generator go:", err)
		os.Exit(1)
	}
}

func run(baseURL, token string) error {
	config := relay.NewConfiguration()
	config.Servers = relay.ServerConfigurations{{URL: baseURL}}
	api := relay.NewAPIClient(config).MessagesAPI
	ctx := context.WithValue(context.Background(), relay.ContextAccessToken, token)
	send := func(message relay.SendRequest, key string) (*relay.SendResponse, error) {
		sent, _, err := api.SendMessage(ctx).SendRequest(message).IdempotencyKey("go-" + key).Execute()
		return sent, err
	}

	image := relay.NewImageMessage("+918080808080", "image", "https://cdn.example.com/i.png")
	image.SetCaption("Receipt")
	header := relay.ImageHeaderAsTemplateHeader(relay.NewImageHeader("image", "https://cdn.example.com/i.png"))
	parameters := relay.NewTemplateWithParameters("order_update", "en")
	parameters.SetHeader(header)
	body := []string{"Siva", "#1234"}
	parameters.SetBody(relay.ArrayOfStringAsTemplateBody(&body))
	parameters.SetButtons([]relay.TemplateButton{
		relay.QuickReplyButtonAsTemplateButton(relay.NewQuickReplyButton("quick_reply", "stop")),
	})
	template := relay.NewTemplateMessage("+918080808080", "template", relay.TemplateWithParametersAsTemplate(parameters))
	messages := map[string]relay.SendRequest{
		"text":     relay.TextMessageAsSendRequest(relay.NewTextMessage("+918080808080", "text", "Your OTP is 4711")),
		"image":    relay.ImageMessageAsSendRequest(image),
		"template": relay.TemplateMessageAsSendRequest(template),
	}
	var ids []string
	for name, message := range messages {
		sent, err := send(message, name+"-"+fmt.Sprint(os.Getpid()))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if !strings.HasPrefix(sent.Id, "sandbox-") {
			return fmt.Errorf("%s: unexpected id %q", name, sent.Id)
		}
		ids = append(ids, sent.Id)
	}

	status, _, err := api.GetMessageStatus(ctx, ids[0]).Execute()
	if err != nil || status.Status != "queued" {
		return fmt.Errorf("status: %v %v", status, err)
	}

	reply := *relay.NewReplyButton("reply", *relay.NewReply("yes", "Yes"))
	buttons := relay.NewInteractiveButtons("button", *relay.NewInteractiveBody("Confirm?"),
		*relay.NewButtonsAction([]relay.ReplyButton{reply, reply}))
	interactive := relay.NewInteractiveMessage("+918080808080", "interactive", relay.InteractiveButtonsAsInteractive(buttons))
	_, err = send(relay.InteractiveMessageAsSendRequest(interactive), "interactive")
	var apiErr *relay.GenericOpenAPIError
	if !errors.As(err, &apiErr) {
		return fmt.Errorf("two buttons with one id: want a 422, got %v", err)
	}
	problem, ok := apiErr.Model().(relay.Problem)
	if !ok || problem.Code != "invalid_request" || len(problem.Errors) == 0 ||
		problem.Errors[0].Field != "interactive.action.buttons[1].reply.id" {
		return fmt.Errorf("unexpected problem %#v (%s)", apiErr.Model(), apiErr.Body())
	}
	fmt.Printf("openapi-generator go: sent %s; status %s; 422 read as Problem (%s, %s)\n",
		strings.Join(ids, ", "), status.Status, problem.Code, problem.Errors[0].Field)
	return nil
}
