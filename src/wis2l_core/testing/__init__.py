"""pytest plugin for apps that use wis2l-core: real servers, a fresh database per test."""
