"""Webhooks on plugin state changes, written to an outbox in the state change's transaction.

events     the event kinds (a registry other features add to) and which change is which
models     Webhook (per plugin or for all), WebhookDelivery (outbox row and delivery log)
outbox     writes the deliveries inside the transaction of the change (services call it)
signing    the HMAC-SHA256 signature header, and how a receiver verifies it
deliverer  the background thread that posts due deliveries, with retries and backoff
"""
