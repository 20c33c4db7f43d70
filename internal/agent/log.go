package agent

// Log attribute keys. Every line of the agent carries "component"; every line
// about one file carries "transfer_id", so its whole story can be grepped.
const (
	keyComponent  = "component"
	keyTransferID = "transfer_id"
	keyFile       = "file"
	keyTarget     = "target"
	keyClass      = "class"
	keyErr        = "err"
)
