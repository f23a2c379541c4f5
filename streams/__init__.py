"""Kafka plumbing: settings, topics, the Faust app, admin, brokers. Importing it turns off
topic auto-creation in aiokafka clients (see ``ltrr.streams.autocreate``)."""

from ltrr.streams.autocreate import disable_aiokafka_auto_create

disable_aiokafka_auto_create()
